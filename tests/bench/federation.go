package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// The federation scenario: what the gateway adds to a call of an upstream
// MCP server's tool. The upstream is this program re-executed
// (upstreamCommand): a fasthttp MCP server whose one tool, echo, answers at
// once, so that what is measured is the gateway's share (an upstream that
// takes milliseconds hides it). wrk calls it directly, then through the
// gateway (2 workers, SQLite) as the tool up-echo on /rpc, side by side in
// alternating rounds: throughput at 64 connections, the gateway's CPU per
// call, and the latency it adds at 2 connections (nothing queued).

const upstreamCommand = "upstream" // bench upstream ADDR

// federationConns is the load's connections: within the in-flight ceiling
// of the gateway's client of one upstream (64 per worker, 2 workers), past
// which calls are refused with 503 by design (docs/federation.md), and few
// enough that the gateway, the upstream and wrk on 2 cores do not queue
// past the shedder's target (at 100, 0.4% of the calls were shed by queue
// delay in some rounds, as designed).
const federationConns = 64

// upstreamMain serves the upstream MCP server on os.Args[2] until killed.
func upstreamMain() error {
	if len(os.Args) < 3 {
		return fmt.Errorf("usage: %s ADDR", upstreamCommand)
	}
	srv := &fasthttp.Server{Handler: upstreamHandler, Name: "bench-upstream"}
	return srv.ListenAndServe(os.Args[2])
}

func upstreamHandler(ctx *fasthttp.RequestCtx) {
	if string(ctx.Path()) == "/health" {
		ctx.SetBodyString(`{"status":"healthy"}`)
		return
	}
	var m struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			Arguments struct {
				Text string `json:"text"`
			} `json:"arguments"`
		} `json:"params"`
	}
	if json.Unmarshal(ctx.PostBody(), &m) != nil {
		ctx.SetStatusCode(fasthttp.StatusBadRequest)
		return
	}
	if m.ID == nil { // a notification
		ctx.SetStatusCode(fasthttp.StatusAccepted)
		return
	}
	ctx.SetContentType("application/json")
	var result string
	switch m.Method {
	case "initialize":
		ctx.Response.Header.Set("Mcp-Session-Id", "bench")
		result = `{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"bench-upstream","version":"1"}}`
	case "tools/list":
		result = `{"tools":[{"name":"echo","description":"echoes its text","inputSchema":{"type":"object","properties":{"text":{"type":"string"}}}}]}`
	case "tools/call":
		text, _ := json.Marshal(m.Params.Arguments.Text)
		result = `{"content":[{"type":"text","text":` + string(text) + `}],"isError":false}`
	default:
		fmt.Fprintf(ctx, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"Method not found"}}`, m.ID)
		return
	}
	fmt.Fprintf(ctx, `{"jsonrpc":"2.0","id":%s,"result":%s}`, m.ID, result)
}

// federationPayload calls tool with a short text.
func federationPayload(tool string) []byte {
	return []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":{"text":"Europe/Dublin"}}}`)
}

func (h *harness) federation() error {
	be := h.sqliteBackend("database")
	up, err := h.newServer("upstream", be)
	if err != nil {
		return err
	}
	up.bare = true
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := up.start(self, upstreamCommand, up.addr); err != nil {
		return err
	}
	if err := up.ready(0); err != nil {
		return err
	}
	gw, err := h.startGateway(be)
	if err != nil {
		return err
	}
	body := `{"url":"http://` + up.addr + `/mcp"}`
	req, _ := http.NewRequest("PUT", "http://"+gw.addr+"/admin/gateways/up", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+gw.jwt)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("register the upstream: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("register the upstream: %d", resp.StatusCode)
	}
	// The catalogue reaches both workers within the coherence bound.
	if err := h.pause(1500 * time.Millisecond); err != nil {
		return err
	}
	direct := filepath.Join(up.dir, "call.lua")
	through := filepath.Join(gw.dir, "call.lua")
	if err := writeWrkScript(direct, "none", federationPayload("echo"), false); err != nil {
		return err
	}
	if err := writeWrkScript(through, gw.jwt, federationPayload("up-echo"), false); err != nil {
		return err
	}
	// A check that both answer the call (and the gateway through the upstream).
	for _, c := range []struct{ addr, tool, jwt string }{{up.addr, "echo", ""}, {gw.addr, "up-echo", gw.jwt}} {
		if err := checkFederatedCall(c.addr, c.tool, c.jwt); err != nil {
			return err
		}
	}
	type result struct {
		rps, p50, p99, cpuUs []float64
		errors               int64
	}
	var res [2]result // 0: direct, 1: through the gateway
	servers := []*server{up, gw}
	scripts := []string{direct, through}
	run := func(i, conns int, dur time.Duration) (wrkResult, time.Duration, error) {
		if err := h.pause(300 * time.Millisecond); err != nil {
			return wrkResult{}, 0, err
		}
		h.waitQuiet()
		cpu0 := servers[i].cpu() // the gateway's own (master and workers), not the upstream's
		r, err := h.runWrk(scripts[i], servers[i].addr, conns, dur, 5*time.Second)
		return r, servers[i].cpu() - cpu0, err
	}
	rounds := max(h.c.rounds, 1)
	for round := range rounds {
		for _, i := range []int{round % 2, 1 - round%2} {
			r, cpu, err := run(i, federationConns, h.c.wrkDur)
			if err != nil {
				return err
			}
			res[i].rps = append(res[i].rps, r.rps())
			res[i].p99 = append(res[i].p99, ms(r.P99))
			if r.Requests > 0 {
				res[i].cpuUs = append(res[i].cpuUs, float64(cpu.Microseconds())/float64(r.Requests))
			}
			res[i].errors += r.Status + r.socketErrors()
			h.vlogf("   federation %-8s round %d: %8.0f RPS p99 %6.2f ms, %d non-2xx, %d socket errors",
				[]string{"direct", "gateway"}[i], round+1, r.rps(), ms(r.P99), r.Status, r.socketErrors())
			// Two connections (wrk's least, one per thread): the latency a
			// call adds when nothing queues.
			r, _, err = run(i, 2, min(h.c.wrkDur, 3*time.Second))
			if err != nil {
				return err
			}
			res[i].p50 = append(res[i].p50, ms(r.P50))
			res[i].errors += r.Status + r.socketErrors()
		}
	}
	median := func(v []float64) float64 {
		runs := make([]runRecord, len(v))
		for i, x := range v {
			runs[i].RPS = x
		}
		return medianOf(runs, func(r runRecord) float64 { return r.RPS })
	}
	const sc = "federation"
	h.add(row{Scenario: sc, Measure: "tools/call of an upstream tool, wrk -c64: RPS through the gateway (2 workers) / calling the upstream directly",
		Value: median(res[1].rps), Text: fmt.Sprintf("%s / %s RPS (p99 %.1f / %.1f ms)", thousands(median(res[1].rps)), thousands(median(res[0].rps)),
			median(res[1].p99), median(res[0].p99)), Result: "info"})
	h.add(row{Scenario: sc, Measure: "the gateway's CPU per federated call (its workers and master, not the upstream's)",
		Value: median(res[1].cpuUs), Text: fmt.Sprintf("%.1f µs", median(res[1].cpuUs)), Result: "info"})
	h.add(row{Scenario: sc, Measure: "latency at 2 connections (nothing queued), p50: through the gateway / directly",
		Value: median(res[1].p50), Text: fmt.Sprintf("%.3f / %.3f ms (+%.3f ms)", median(res[1].p50), median(res[0].p50), median(res[1].p50)-median(res[0].p50)),
		Result: "info"})
	ok := res[0].errors == 0 && res[1].errors == 0
	h.add(row{Scenario: sc, Measure: "failed calls (non-2xx or socket errors), both ways", Value: float64(res[0].errors + res[1].errors),
		Text: fmt.Sprintf("%d", res[0].errors+res[1].errors), Bar: "0", Result: passIf(ok)})
	return nil
}

// checkFederatedCall calls tool once on addr and checks the echo.
func checkFederatedCall(addr, tool, jwt string) error {
	req, _ := http.NewRequest("POST", "http://"+addr+"/rpc", bytes.NewReader(federationPayload(tool)))
	req.Header.Set("Content-Type", "application/json")
	if jwt != "" {
		req.Header.Set("Authorization", "Bearer "+jwt)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: (&net.Dialer{}).DialContext}}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("call %s on %s: %w", tool, addr, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(b.String(), "Europe/Dublin") || strings.Contains(b.String(), `"isError":true`) {
		return fmt.Errorf("call %s on %s: %d %s", tool, addr, resp.StatusCode, b.String())
	}
	return nil
}
