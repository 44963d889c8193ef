package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// Resumable MCP streams (rpc/mcp_resume.go). A streamed tools/call records
// each event here before writing it to its SSE stream; a client that loses
// the stream reconnects (Last-Event-ID) to any worker of any instance, which
// replays the events after that id from here and then polls for new ones
// until the final one. So the log must be shared by every process that
// shares the store:
//
//   - CACHE_TYPE=redis: one sorted set per stream, scored by Seq, under
//     "<prefix>ev:<stream>", expiring at the stream's Until. Redis expires
//     it on its own, and a poll every 200 ms costs the database nothing.
//   - every other cache type: the stream_events table (migration 7), one
//     row per event. Every row of a stream carries the stream's expiry, so
//     a read filters rows by it, and the purge of revocations (each
//     revocation write, and Migrate) plus each new stream's opening append
//     delete the expired rows.
//
// Events are not cached in the near cache: a resumed stream wants the
// events appended a moment ago, and only a reconnected client reads them.
// With Redis, a Redis failure is returned, never answered from the
// database: the database holds no events in that mode, and the caller can
// stream without resumption.
//
// Stream keys hold the session id ("<session> <stream>"), which is as good
// as a credential for the session, so errors name the event's Seq only.

// StreamEvent is one event of a resumable MCP stream.
type StreamEvent struct {
	Seq   int    // 0 is the stream's opening record; events are 1, 2, ... in order
	Data  []byte // one JSON-RPC message (compact JSON)
	Final bool   // the stream's last event: the response
}

// MaxStreamKeyLen is the longest stream key AppendStreamEvent accepts.
const MaxStreamKeyLen = 512

// ErrBadStreamEvent is returned for an empty or too long stream key or a
// negative Seq.
var ErrBadStreamEvent = errors.New("bad stream event")

// eventsKey is a stream's sorted set in Redis. "ev:" is a prefix no cache
// key uses; the set is read with Do, never DoCache, so Redis does not track
// it and its writes push no invalidations (tracking is OPTIN).
func (r *redisCache) eventsKey(stream string) string { return r.prefix + "ev:" + stream }

// appendEventScript adds one member unless the set has one of that seq
// (score) already: ZADD NX alone compares whole members, and a retried
// append of the same seq may carry other bytes (the opening record holds a
// time), which would make two events of one seq. Then it moves the expiry
// to ARGV[3] (Unix ms) unless the set already lives longer: a stream's
// expiry never shortens (the set's current expiry is read as Redis's TIME
// plus PTTL: PEXPIRETIME needs Redis 7). One script, so that a set never
// exists without an expiry.
var appendEventScript = rueidis.NewLuaScript(`
if redis.call('ZCOUNT', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
end
local want = tonumber(ARGV[3])
local pttl = redis.call('PTTL', KEYS[1])
if pttl >= 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if now + pttl >= want then return 0 end
end
redis.call('PEXPIREAT', KEYS[1], want)
return 1
`)

// AppendStreamEvent records ev for stream (an opaque key up to
// MaxStreamKeyLen bytes) and keeps the stream's events until `until`; each
// append may extend that, none shortens it. Appending the same (stream,
// seq) twice keeps the first, without error.
func (s *Store) AppendStreamEvent(ctx context.Context, stream string, ev StreamEvent, until time.Time) error {
	if stream == "" || len(stream) > MaxStreamKeyLen || ev.Seq < 0 {
		return fmt.Errorf("append stream event %d: %w: the stream key must have 1 to %d bytes and the seq be >= 0",
			ev.Seq, ErrBadStreamEvent, MaxStreamKeyLen)
	}
	var err error
	if s.redis != nil {
		err = s.redisAppendEvent(ctx, stream, ev, until)
	} else {
		err = s.dbAppendEvent(ctx, stream, ev, until.Unix())
	}
	if err != nil {
		return fmt.Errorf("append stream event %d: %w", ev.Seq, err)
	}
	return nil
}

// StreamEvents returns the stream's events with Seq > after, in Seq order,
// at most limit of them; found is false when the stream has no record at
// all (unknown, or expired). after = -1 includes the opening record.
func (s *Store) StreamEvents(ctx context.Context, stream string, after, limit int) (evs []StreamEvent, found bool, err error) {
	if stream == "" || len(stream) > MaxStreamKeyLen {
		return nil, false, nil // never appended
	}
	if s.redis != nil {
		evs, found, err = s.redisStreamEvents(ctx, stream, after, limit)
	} else {
		evs, found, err = s.dbStreamEvents(ctx, stream, after, limit)
	}
	if err != nil {
		return nil, false, fmt.Errorf("read stream events after %d: %w", after, err)
	}
	return evs, found, nil
}

// --- Database (every cache type but redis) ------------------------------------------

// dbAppendEvent inserts the event's row, and gives the stream's rows one
// expiry, as Redis gives its set one: the later of until and the stream's
// current expiry. A stream already expired (not yet purged) is deleted
// first, as Redis would have. The rows are rewritten at most once a second
// (expiries are in seconds, and rows already there are skipped), however
// fast the events come.
func (s *Store) dbAppendEvent(ctx context.Context, stream string, ev StreamEvent, until int64) error {
	now := time.Now().Unix()
	return s.noteDB(s.db.tx(ctx, func(q querier) error {
		var cur int64 // the stream's expiry; 0: no rows
		if err := queryOne(ctx, q, "SELECT COALESCE(MAX(expires_at), 0) FROM stream_events WHERE stream = $1",
			[]any{stream}, &cur); err != nil {
			return err
		}
		if cur > 0 && cur <= now {
			if _, err := q.exec(ctx, "DELETE FROM stream_events WHERE stream = $1", stream); err != nil {
				return err
			}
			cur = 0
		}
		exp := max(until, cur)
		if _, err := q.exec(ctx, `INSERT INTO stream_events (stream, seq, data, final, expires_at)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (stream, seq) DO NOTHING`,
			stream, ev.Seq, string(ev.Data), ev.Final, exp); err != nil {
			return err
		}
		if exp > cur && cur > 0 {
			if _, err := q.exec(ctx, "UPDATE stream_events SET expires_at = $2 WHERE stream = $1 AND expires_at < $2",
				stream, exp); err != nil {
				return err
			}
		}
		// The revocation writes purge too, but a gateway may see none for
		// long (clients rarely DELETE their sessions): each new stream
		// clears away the expired ones, so the table holds about one
		// retention period of events.
		if ev.Seq == 0 {
			return purgeStreamEvents(ctx, q, now)
		}
		return nil
	}))
}

func (s *Store) dbStreamEvents(ctx context.Context, stream string, after, limit int) ([]StreamEvent, bool, error) {
	now := time.Now().Unix()
	var evs []StreamEvent
	if limit > 0 {
		r, err := s.db.query(ctx, `SELECT seq, data, final FROM stream_events
			WHERE stream = $1 AND seq > $2 AND expires_at > $3 ORDER BY seq LIMIT $4`, stream, after, now, limit)
		if err = s.noteDB(err); err != nil {
			return nil, false, err
		}
		for r.Next() {
			var ev StreamEvent
			var data string
			if err := r.Scan(&ev.Seq, &data, &ev.Final); err != nil {
				r.Close()
				return nil, false, err
			}
			ev.Data = []byte(data)
			evs = append(evs, ev)
		}
		err = r.Err()
		r.Close()
		if err = s.noteDB(err); err != nil {
			return nil, false, err
		}
		if len(evs) > 0 {
			return evs, true, nil
		}
		if after < 0 {
			return nil, false, nil // every record was asked for, and there is none
		}
	}
	var one int
	err := s.noteDB(queryOne(ctx, s.db, "SELECT 1 FROM stream_events WHERE stream = $1 AND expires_at > $2 LIMIT 1",
		[]any{stream, now}, &one))
	switch {
	case errors.Is(err, errNoRows):
		return nil, false, nil
	case err != nil:
		return nil, false, err
	}
	return nil, true, nil
}

// purgeStreamEvents deletes the events of expired streams (all of a
// stream's rows expire together).
func purgeStreamEvents(ctx context.Context, q querier, now int64) error {
	if _, err := q.exec(ctx, "DELETE FROM stream_events WHERE expires_at <= $1", now); err != nil {
		return fmt.Errorf("purge stream events: %w", err)
	}
	return nil
}

// --- Redis --------------------------------------------------------------------------

// A member of a stream's sorted set is "<seq>:<0|1>:<data>": the seq makes
// members unique, the flag is Final.

func encodeEventMember(ev StreamEvent) string {
	final := "0"
	if ev.Final {
		final = "1"
	}
	return strconv.Itoa(ev.Seq) + ":" + final + ":" + string(ev.Data)
}

func decodeEventMember(m string) (StreamEvent, error) {
	seq, rest, ok1 := strings.Cut(m, ":")
	final, data, ok2 := strings.Cut(rest, ":")
	n, err := strconv.Atoi(seq)
	if !ok1 || !ok2 || err != nil || (final != "0" && final != "1") {
		return StreamEvent{}, errors.New("undecodable stream event in Redis")
	}
	return StreamEvent{Seq: n, Data: []byte(data), Final: final == "1"}, nil
}

// up fails at once while Redis is known to be away (the heartbeat
// finds it back), so that a stream does not wait a socket timeout per
// event.
func (r *redisCache) up() error {
	if r.down.Load() {
		return fmt.Errorf("redis %s is unreachable", r.addr)
	}
	return nil
}

func (s *Store) redisAppendEvent(ctx context.Context, stream string, ev StreamEvent, until time.Time) error {
	r := s.redis
	if err := r.up(); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	return appendEventScript.Exec(cctx, r.client, []string{r.eventsKey(stream)}, []string{
		strconv.Itoa(ev.Seq), encodeEventMember(ev), strconv.FormatInt(until.UnixMilli(), 10)}).Error()
}

func (s *Store) redisStreamEvents(ctx context.Context, stream string, after, limit int) ([]StreamEvent, bool, error) {
	r := s.redis
	if err := r.up(); err != nil {
		return nil, false, err
	}
	cctx, cancel := context.WithTimeout(ctx, r.opTimeout)
	defer cancel()
	key := r.eventsKey(stream)
	// One round trip: the page, and whether the stream exists (a page may
	// be empty because nothing followed after yet).
	res := r.client.DoMulti(cctx,
		r.client.B().Zrangebyscore().Key(key).Min("("+strconv.Itoa(after)).Max("+inf").Limit(0, int64(max(limit, 0))).Build(),
		r.client.B().Exists().Key(key).Build())
	members, err := res[0].AsStrSlice()
	if err != nil {
		return nil, false, err
	}
	n, err := res[1].AsInt64()
	if err != nil {
		return nil, false, err
	}
	evs := make([]StreamEvent, 0, len(members))
	for _, m := range members {
		ev, err := decodeEventMember(m)
		if err != nil {
			return nil, false, err
		}
		evs = append(evs, ev)
	}
	if len(evs) == 0 {
		evs = nil
	}
	return evs, n > 0 || len(evs) > 0, nil
}

// --- Cross-worker cancellation ------------------------------------------------------

// A notifications/cancelled may reach a worker other than the one running
// the call. That worker records it as a revocation of kind RevokedCancel,
// keyed by the call (an opaque key: the rpc package makes it from the
// session and the request id), and the running worker polls CallCancelled.
// The tombstones give what is needed: coherence within one second across
// workers and instances (the epoch bump, and the Redis tombstone), a near
// cache so that the poll of every running call (every 250 ms) is a
// sync.Map lookup but the first, and the purge.

// CancelCall records that the call named key (1 to MaxRevocationIDLen
// bytes) was cancelled, until `until`.
func (s *Store) CancelCall(ctx context.Context, key string, until time.Time) error {
	if key == "" || len(key) > MaxRevocationIDLen {
		return fmt.Errorf("%w: the call key must have 1 to %d bytes", ErrBadRevocation, MaxRevocationIDLen)
	}
	// Not 0 (for good) for a zero until: a cancellation matters only while
	// its call may run.
	r := Revocation{Kind: RevokedCancel, ID: key}
	return s.writeRevocation(ctx, r, max(until.Unix(), 1), revokeUpsert)
}

// CallCancelled reports whether key was cancelled (and its Until has not
// passed). It is read like IsRevoked: from the near cache on the hot path.
func (s *Store) CallCancelled(ctx context.Context, key string) (bool, error) {
	return s.IsRevoked(ctx, RevokedCancel, key)
}
