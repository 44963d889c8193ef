// Package protocol is the contract between the processes of one server: the
// master and its workers, and a master and the one that replaces it on USR2.
// Both sides use these definitions and nothing else.
//
// # Process tree
//
// A master binds the listening sockets (or adopts them from systemd or from
// its predecessor), forks workers and supervises them. A worker serves on
// the inherited sockets, reports through the status table and a pipe, and
// never outlives its master by more than a second.
//
// # File descriptors of a worker
//
//	3  FDConfig     memfd, the Envelope as JSON (settings of this server and
//	                the embedding program's); read once with ReadAt
//	4  FDStatus     memfd, the status table; map it with AttachTable
//	5  FDMaster     pipe write end: messages to the master, one per line
//	6… FDListeners  listening sockets, EnvListeners of them, in bind order
//
// A worker marks them close-on-exec once adopted (AttachTable does it for
// the table), so nothing it runs inherits them.
//
// # File descriptors of a new master (USR2) and under systemd
//
// Passed sockets start at FDPassedStart (3), for systemd's socket activation
// (LISTEN_FDS, LISTEN_PID) and for an upgrade alike. On an upgrade,
// EnvUpgradeFDs counts them, the first EnvUpgradePrimary are the server's
// addresses in bind order and the rest the other slots' reuse-port sockets;
// EnvUpgradeActivated says the primary ones came from systemd, and
// EnvOldMaster names the master that is still serving (see handover.go).
//
// # Environment of a worker
//
// Identity.Env writes, and ReadIdentity reads, EnvSlot, EnvGeneration,
// EnvRow (its row in the status table), EnvListeners, EnvMasterPID and
// EnvMaxRequests. All are whole numbers.
//
// # Messages from a worker
//
// One line each on FDMaster, written with EncodeReady or EncodeRetire and
// read with ParseMessage, which refuses anything else:
//
//	ready            serving: the master may stop the worker it replaces
//	retire <reason>  replace me, then stop me gracefully; reason is one of
//	                 recycled, lifetime, rss, timeout
//
// A worker that cannot start its application exits with ExitBootError.
//
// # Status table
//
// One memfd: a header of HeaderWords 64-bit words on a page of its own
// (HHeaderBytes, whole pages), then HRows rows of RowWords words each. The
// master maps all of it read-write; a worker maps the header read-only and
// the rows read-write; `mcpgateway status` maps everything read-only. All
// access is atomic, word by word.
//
// Header (master only), by word:
//
//	0..10    HMagic, HVersion (Version), HRows, HMasterPID, HMasterStarted,
//	         HFoldSeq (seqlock: odd while a fold runs), HWorkersTarget,
//	         HMaxRow (read through MaxRow, which clamps it), HStopping,
//	         HHeaderBytes, HRowWords
//	11..31   free
//	32..127  totals of exited workers' counters, each at its row index
//	128..139 HStarts, then HExit<reason> (ExitField, ExitReasons)
//	139..191 free for master counters
//	192..511 free
//
// Worker row, by word:
//
//	0..9     FPid, FSlot, FGeneration, FState (State*), FStarted,
//	         FHeartbeat (judge it with HeartbeatAge), FInFlight,
//	         FOldestStart, FConns, FRSS
//	10..31   free for gauges (not folded): open streams, ...
//	32..56   counters: CServed, CRefused, CTimeouts, CPanics, C1xx..C5xx,
//	         CDurationSum, CBucket0 + NumBuckets duration buckets
//	57..63   reserved counters: refusals by reason
//	64..95   reserved counters: queue-delay histogram
//	96..111  reserved counters: rate-limit counts
//	112..127 free counters
//
// Every word from 32 to 127 of a row is a counter: when the master reaps a
// worker, Fold adds them all to the header and frees the row. Snapshot
// reads the whole table consistently against Fold, with a bounded wait.
//
// Every time in the table is Nanotime: CLOCK_MONOTONIC, in nanoseconds,
// the same clock in every process.
//
// The read-only header mapping stops a worker's stray writes, not a
// hostile worker: it still holds a writable fd of the memfd. And rows are
// writable by every worker. So whatever is read from the table is judged as
// untrusted input: MaxRow is clamped, Snapshot's wait is bounded, and the
// master judges heartbeats with HeartbeatAge.
package protocol
