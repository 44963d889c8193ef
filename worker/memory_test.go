package worker

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/mcpgateway/mcpgateway/supervisor/protocol"
	"github.com/valyala/fasthttp"
)

// Review 1.7: a large request buffer (the granian profile's 512 KiB) is
// not held by idle keep-alive connections, so that a thousand of them do
// not cost half a GiB.
func TestIdleConnectionsHoldNoLargeBuffer(t *testing.T) {
	w, addr := startTestWorker(t, protocol.WorkerOptions{MaxHeaderSize: 512 << 10, WorkerConnections: 1000},
		func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") })
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()
	const conns = 200
	var open []net.Conn
	defer func() {
		// Closed and gone before the test's cleanup unmaps the status
		// table, which the connections' goroutines write when they end.
		for _, c := range open {
			c.Close()
		}
		for deadline := time.Now().Add(5 * time.Second); w.conns.open() > 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
	}()
	for range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	time.Sleep(100 * time.Millisecond)
	grown := int64(heap()) - int64(before)
	t.Logf("%d idle keep-alive connections: heap +%d KiB", conns, grown>>10)
	if grown > 32<<20 { // 512 KiB each would be 100 MiB
		t.Fatalf("%d idle connections hold %d MiB", conns, grown>>20)
	}
}
