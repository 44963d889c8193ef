package tests

// Outages of the servers behind the gateway, under a steady load: a
// PostgreSQL cluster of the test's own stopped with pg_ctl stop -m fast and
// started again, and a redis-server of the test's own killed and started
// again, never the shared servers other tests use. Requests that need the
// database fail fast (503) while it is down, requests answered from the near
// cache go on, readiness follows on both ports, and everything recovers
// without a restart of the gateway.

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/mcpgateway/mcpgateway/internal/pgcluster"
	"github.com/mcpgateway/mcpgateway/internal/proctest"
	"github.com/mcpgateway/mcpgateway/rpc"
)

// maxAnswer is the longest any answer may take, outage or not: the default
// DB_CONNECT_TIMEOUT (2 s) plus slack for a loaded machine.
const maxAnswer = 3 * time.Second

// sample is one answer a load client got.
type sample struct {
	at   time.Time // when the request was sent
	took time.Duration
	code int
	body string
}

// client is one load client: it sends its request over and over (a short
// pause between) and keeps every answer.
type client struct {
	name string
	send func(c *http.Client) (int, string)

	mu      sync.Mutex
	samples []sample
}

func (c *client) run(stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	hc := proctest.KeepAliveClient(1, 10*time.Second)
	for {
		select {
		case <-stop:
			return
		default:
		}
		start := time.Now()
		code, body := c.send(hc)
		c.mu.Lock()
		c.samples = append(c.samples, sample{at: start, took: time.Since(start), code: code, body: body})
		c.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *client) all() []sample {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]sample(nil), c.samples...)
}

// firstAfter returns the first answer sent after t with the status, and
// whether there is one.
func (c *client) firstAfter(t time.Time, code int) (sample, bool) {
	for _, s := range c.all() {
		if !s.at.Before(t) && s.code == code {
			return s, true
		}
	}
	return sample{}, false
}

// check fails the test for every answer that took longer than maxAnswer or
// whose status is not allowed at the time it was sent.
func (c *client) check(t *testing.T, allowed func(at time.Time) []int) (n int, slowest time.Duration) {
	t.Helper()
	bad := 0
	for _, s := range c.all() {
		slowest = max(slowest, s.took)
		ok := false
		for _, code := range allowed(s.at) {
			ok = ok || s.code == code
		}
		if (!ok || s.took > maxAnswer) && bad < 5 {
			bad++
			t.Errorf("%s: %d after %v at %s: %.300s", c.name, s.code, s.took.Round(time.Millisecond), s.at.Format("15:04:05.000"), s.body)
		}
	}
	return len(c.all()), slowest
}

// loadClients are the few clients of a steady load: the guide's payload by
// a known (cached) user, the admin API's tool list (always read from the
// database), and the guide's payload by a user the gateway never saw (a
// near-cache miss: the database must be asked).
// startOutageLoad runs loadClients' clients, two on the cached path, until
// the returned stop (which may be called more than once) ends them.
func startOutageLoad(g *gateway, token string) (cached, database, fresh *client, stop func()) {
	cached, database, fresh = loadClients(g, token)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range []*client{cached, cached, database, fresh} {
		wg.Add(1)
		go c.run(done, &wg)
	}
	var once sync.Once
	return cached, database, fresh, func() {
		once.Do(func() { close(done) })
		wg.Wait()
	}
}

func loadClients(g *gateway, token string) (cached, database, fresh *client) {
	var n int
	var mu sync.Mutex
	cached = &client{name: "cached user, guide's payload", send: func(c *http.Client) (int, string) {
		return httpDo(c, "POST", g.url("/rpc"), token, seedPayload)
	}}
	database = &client{name: "admin tool list", send: func(c *http.Client) (int, string) {
		return httpDo(c, "GET", g.url("/admin/tools"), token, "")
	}}
	fresh = &client{name: "new user, guide's payload", send: func(c *http.Client) (int, string) {
		mu.Lock()
		n++
		email := fmt.Sprintf("new%d@example.com", n)
		mu.Unlock()
		tok, err := rpc.MintToken(rpc.TokenRequest{Email: email, Expires: time.Hour, Secret: testSecret})
		if err != nil {
			return 0, err.Error()
		}
		return httpDo(c, "POST", g.url("/rpc"), tok, seedPayload)
	}}
	return cached, database, fresh
}

// warm sends the guide's payload over new connections until both workers
// have had it (a connection lands on either).
func warm(t *testing.T, g *gateway, token string) {
	t.Helper()
	for range 40 {
		if err := checkSeed(httpDo(freshClient, "POST", g.url("/rpc"), token, seedPayload)); err != nil {
			t.Fatalf("warm-up: %v", err)
		}
	}
}

// waitBothReady is waitBoth, returning when cond first held.
func waitBothReady(t *testing.T, what string, timeout time.Duration, health, main string, cond func(r readiness) bool) time.Time {
	t.Helper()
	waitBoth(t, what, timeout, health, main, cond)
	return time.Now()
}

// noLeak fails if a /ready body names the server's port or carries driver text.
func noLeak(t *testing.T, body string, port int) {
	t.Helper()
	for _, w := range []string{strconv.Itoa(port), "refused", "SQLSTATE", "dial", "postgres@", "127.0.0.1"} {
		if strings.Contains(body, w) {
			t.Errorf("/ready body contains %q: %s", w, body)
		}
	}
}

func TestDatabaseOutageUnderLoad(t *testing.T) {
	pg := pgcluster.Start(t)
	hp := fmt.Sprintf("127.0.0.1:%d", proctest.MustFreePort(t))
	g := serve(t, []string{"DATABASE_URL=" + pg.URL(), "CACHE_TYPE=database"}, "--workers", "2", "--health-bind", hp)
	health, main := "http://"+hp+"/ready", g.url("/ready")
	token := g.token()
	warm(t, g, token)
	waitBoth(t, "ready", 5*time.Second, health, main, func(r readiness) bool { return r.code == 200 })

	cached, database, fresh, stopLoad := startOutageLoad(g, token)
	defer stopLoad()
	time.Sleep(time.Second)

	// Down.
	down := time.Now()
	if err := pg.StopServer("fast"); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	unready := waitBothReady(t, "/ready failing on the database", 8*time.Second, health, main, func(r readiness) bool {
		return r.code == 503 && r.Database.Status == "failed"
	})
	m := getReady(t, main)
	noLeak(t, m.raw, pg.Port)
	noLeak(t, getReady(t, health).raw, pg.Port)
	time.Sleep(time.Second) // a little more of the outage under load

	// Up.
	starting := time.Now()
	if err := pg.StartServer(); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	if _, ok := proctest.Poll(10*time.Second, 50*time.Millisecond, func() bool {
		_, ok := database.firstAfter(up, 200)
		return ok
	}); !ok {
		t.Fatal("the admin tool list did not succeed again within 10 s of the database's return")
	}
	ready := waitBothReady(t, "/ready passing again", 10*time.Second, health, main, func(r readiness) bool {
		return r.code == 200 && r.Database.Status == "ok"
	})
	time.Sleep(500 * time.Millisecond)
	stopLoad()

	// The cached path never failed, and nothing took longer than maxAnswer.
	nCached, slowCached := cached.check(t, func(time.Time) []int { return []int{200} })
	// The database path: 200 before, 503 while down (a request in flight as
	// the server stopped may get either), 200 once back.
	recovered, _ := database.firstAfter(up, 200)
	freshBack, _ := fresh.firstAfter(up, 401)
	during := func(back time.Time, normal int) func(at time.Time) []int {
		return func(at time.Time) []int {
			switch {
			case at.Before(down):
				return []int{normal}
			case at.Before(stopped), !at.Before(starting) && at.Before(back):
				return []int{normal, 503}
			case at.Before(starting):
				return []int{503}
			default:
				return []int{normal}
			}
		}
	}
	nDB, slowDB := database.check(t, during(recovered.at, 200))
	nFresh, slowFresh := fresh.check(t, during(freshBack.at, 401)) // 401: the database says no such user
	first503, ok := database.firstAfter(down, 503)
	if !ok {
		t.Fatal("the admin tool list never got a 503 during the outage")
	}
	for _, s := range database.all() {
		if s.code == 503 && (!strings.Contains(s.body, "unavailable") || strings.Contains(s.body, strconv.Itoa(pg.Port))) {
			t.Errorf("a 503 that is not the generic answer: %s", s.body)
			break
		}
	}
	t.Logf("PostgreSQL stopped (pg_ctl stop -m fast, %v): first 503 %v after the stop began (answered in %v); /ready 503 on both ports after %v",
		stopped.Sub(down).Round(time.Millisecond), first503.at.Add(first503.took).Sub(down).Round(time.Millisecond),
		first503.took.Round(time.Millisecond), unready.Sub(down).Round(time.Millisecond))
	t.Logf("PostgreSQL started again: the database path succeeded %v after, /ready 200 on both ports %v after",
		recovered.at.Add(recovered.took).Sub(up).Round(time.Millisecond), ready.Sub(up).Round(time.Millisecond))
	t.Logf("answers: cached path %d (slowest %v), database path %d (slowest %v), new users %d (slowest %v)",
		nCached, slowCached.Round(time.Millisecond), nDB, slowDB.Round(time.Millisecond), nFresh, slowFresh.Round(time.Millisecond))
	if !g.Log.Contains(`"msg":"database check failed"`) || g.Log.Contains("recovered panic") {
		t.Error("the outage was not logged by the workers' check, or something panicked")
	}
}

// startRedis starts a redis-server of the test's own on port, killed at the
// end of the test (by its process group, which is its own).
func startRedis(t *testing.T, port int) *proctest.Proc {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not in PATH: %v", err)
	}
	p := proctest.MustStart(t, exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir()))
	p.MustWaitOutput(t, "Ready to accept connections", 5*time.Second)
	return p
}

// redisKeys counts the keys of prefix in the Redis at addr.
func redisKeys(addr, prefix string) (int, error) {
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true, ForceSingleClient: true})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	keys, err := c.Do(ctx, c.B().Keys().Pattern(prefix+"*").Build()).AsStrSlice()
	return len(keys), err
}

func TestRedisOutageUnderLoad(t *testing.T) {
	port := proctest.MustFreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	rs := startRedis(t, port)
	hp := fmt.Sprintf("127.0.0.1:%d", proctest.MustFreePort(t))
	g := serve(t, []string{"CACHE_TYPE=redis", "REDIS_URL=redis://" + addr + "/0"}, "--workers", "2", "--health-bind", hp)
	health, main := "http://"+hp+"/ready", g.url("/ready")
	token := g.token()
	warm(t, g, token)
	waitBoth(t, "ready", 5*time.Second, health, main, func(r readiness) bool { return r.code == 200 })
	if m := getReady(t, main); m.Cache == nil || m.Cache.Status != "ok" || m.Cache.Detail != "redis" {
		t.Fatalf("main port with Redis up: %s", m.raw)
	}
	if n, err := redisKeys(addr, "mcpgw:"); err != nil || n == 0 {
		t.Fatalf("no cache keys in Redis before the outage: %d %v", n, err)
	}

	cached, database, fresh, stopLoad := startOutageLoad(g, token)
	defer stopLoad()
	time.Sleep(time.Second)

	// Down: ready all along, the cache reported degraded on the main port.
	down := time.Now()
	rs.Stop(syscall.SIGKILL, time.Second)
	var degraded time.Time
	if took, ok := proctest.Poll(8*time.Second, 100*time.Millisecond, func() bool {
		h, m := getReady(t, health), getReady(t, main)
		if h.code != 200 || m.code != 200 {
			t.Fatalf("/ready with Redis down: health port %d %s, main port %d %s", h.code, h.raw, m.code, m.raw)
		}
		return m.Cache != nil && m.Cache.Status == "degraded"
	}); !ok {
		t.Fatalf("the cache not reported degraded within 8 s: %s", getReady(t, main).raw)
	} else {
		degraded = down.Add(took)
	}
	m := getReady(t, main)
	noLeak(t, m.raw, port)
	if m.Cache.Detail != "redis: unreachable" {
		t.Errorf("cache detail with Redis down: %q", m.Cache.Detail)
	}
	time.Sleep(time.Second)

	// Up: a new, empty redis-server on the same port.
	startRedis(t, port)
	up := time.Now()
	var back, used time.Time // the cache reported ok again; keys written to the new Redis
	if _, ok := proctest.Poll(10*time.Second, 100*time.Millisecond, func() bool {
		if m := getReady(t, main); back.IsZero() && m.code == 200 && m.Cache != nil && m.Cache.Status == "ok" {
			back = time.Now()
		}
		if n, err := redisKeys(addr, "mcpgw:"); used.IsZero() && err == nil && n > 0 {
			used = time.Now()
		}
		return !back.IsZero() && !used.IsZero()
	}); !ok {
		t.Fatalf("within 10 s of Redis's return: cache ok at %v, keys written at %v (zero: never): %s", back, used, getReady(t, main).raw)
	}
	time.Sleep(500 * time.Millisecond)
	stopLoad()

	// Every request got its normal answer throughout, in time.
	nCached, slowCached := cached.check(t, func(time.Time) []int { return []int{200} })
	nDB, slowDB := database.check(t, func(time.Time) []int { return []int{200} })
	nFresh, slowFresh := fresh.check(t, func(time.Time) []int { return []int{401} })
	t.Logf("Redis killed: /ready 200 throughout, cache degraded on the main port after %v; Redis started again: cache ok after %v, keys written again after %v",
		degraded.Sub(down).Round(time.Millisecond), back.Sub(up).Round(time.Millisecond), used.Sub(up).Round(time.Millisecond))
	t.Logf("answers: cached path %d (slowest %v), database path %d (slowest %v), new users %d (slowest %v)",
		nCached, slowCached.Round(time.Millisecond), nDB, slowDB.Round(time.Millisecond), nFresh, slowFresh.Round(time.Millisecond))
}
