package control

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
)

// FormatStatus writes the status text: one line for the master, then one
// per worker. The master answers CmdStatus with it, and `mcpgateway status
// --pid` prints the same from the status table, so both read alike.
func FormatStatus(out io.Writer, s protocol.Snapshot, now int64) {
	fmt.Fprintf(out, "master %d  up %s  workers %d/%d  served %d  refused %d  timeouts %d  worker starts %d\n",
		s.MasterPID, age(now, s.MasterStarted), len(s.Workers), s.Target, s.Total.Served, s.Total.Refused, s.Total.Timeouts, s.Starts)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "SLOT\tPID\tGEN\tAGE\tSTATE\tIN FLIGHT\tCONNS\tSERVED\tREFUSED\tRSS MiB\t")
	for _, w := range s.Workers {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t%.1f\t\n", w.Slot, w.Pid, w.Generation,
			age(now, w.Started), protocol.StateName(w.State), w.InFlight, w.Conns,
			w.Counters.Served, w.Counters.Refused, float64(w.RSS)/(1<<20))
	}
	tw.Flush()
}

func age(now, since int64) string {
	if since == 0 {
		return "-"
	}
	return time.Duration(now - since).Truncate(time.Second).String()
}
