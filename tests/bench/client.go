package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// A minimal HTTP/1.1 client over one connection: the probes and samplers
// must cost the machine as little as possible and see every byte the
// server sent (status, headers, exact body).

type rawConn struct {
	c  net.Conn
	br *bufio.Reader
}

type rawResp struct {
	status int
	body   []byte
	total  int // bytes of the whole response, head and body
	close  bool
}

const ioTimeout = 15 * time.Second

func dialRaw(addr string) (*rawConn, error) {
	c, err := net.DialTimeout("tcp4", addr, ioTimeout)
	if err != nil {
		return nil, err
	}
	return &rawConn{c: c, br: bufio.NewReaderSize(c, 16<<10)}, nil
}

func (r *rawConn) Close() error { return r.c.Close() }

func (r *rawConn) do(req []byte) (rawResp, error) {
	_ = r.c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := r.c.Write(req); err != nil {
		return rawResp{}, err
	}
	return readResponse(r.br)
}

func readResponse(br *bufio.Reader) (rawResp, error) {
	var resp rawResp
	line, err := br.ReadSlice('\n')
	if err != nil {
		return resp, err
	}
	resp.total += len(line)
	f := bytes.Fields(line)
	if len(f) < 2 || !bytes.HasPrefix(f[0], []byte("HTTP/1.")) {
		return resp, fmt.Errorf("bad status line %q", line)
	}
	if resp.status, err = strconv.Atoi(string(f[1])); err != nil {
		return resp, fmt.Errorf("bad status line %q", line)
	}
	length := -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return resp, err
		}
		resp.total += len(line)
		h := bytes.TrimRight(line, "\r\n")
		if len(h) == 0 {
			break
		}
		k, v, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch strings.ToLower(string(k)) {
		case "content-length":
			if length, err = strconv.Atoi(string(v)); err != nil {
				return resp, fmt.Errorf("bad Content-Length %q", v)
			}
		case "connection":
			resp.close = bytes.EqualFold(v, []byte("close"))
		case "transfer-encoding":
			return resp, errors.New("chunked responses are not expected here")
		}
	}
	if length < 0 {
		return resp, errors.New("response without Content-Length")
	}
	resp.body = make([]byte, length)
	if _, err := io.ReadFull(br, resp.body); err != nil {
		return resp, err
	}
	resp.total += length
	return resp, nil
}

// fetch sends one request on a fresh connection.
func fetch(addr string, req []byte) (rawResp, error) { return fetchWithin(addr, req, ioTimeout) }

func fetchWithin(addr string, req []byte, timeout time.Duration) (rawResp, error) {
	c, err := dialRaw(addr)
	if err != nil {
		return rawResp{}, err
	}
	defer c.Close()
	_ = c.c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.c.Write(req); err != nil {
		return rawResp{}, err
	}
	return readResponse(c.br)
}

func getReq(path string, close bool) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: mcpgw-bench\r\n", path)
	if close {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

func postRPC(jwt string, payload []byte, close bool) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: mcpgw-bench\r\nContent-Type: application/json\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n", jwt, len(payload))
	if close {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	b.Write(payload)
	return b.Bytes()
}

// verifyConvertTime checks that a /rpc answer to the seed payload is a
// successful convert_time result: a 200 that carries a JSON-RPC error, or a
// tool result flagged isError, is a failure.
func verifyConvertTime(status int, body []byte) error {
	if status != 200 {
		return fmt.Errorf("status %d: %.200s", status, body)
	}
	var msg struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   json.RawMessage `json:"error"`
		Result  *struct {
			Content []struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"content"`
			IsError bool `json:"isError"`
		} `json:"result"`
	}
	if err := json.Unmarshal(body, &msg); err != nil {
		return fmt.Errorf("not JSON: %v: %.200s", err, body)
	}
	if msg.Error != nil || msg.Result == nil || msg.Result.IsError || len(msg.Result.Content) == 0 || string(msg.ID) != "1" {
		return fmt.Errorf("not a convert_time result: %.300s", body)
	}
	var out struct {
		Source struct{ Timezone, Datetime string } `json:"source"`
		Target struct{ Timezone, Datetime string } `json:"target"`
	}
	if err := json.Unmarshal([]byte(msg.Result.Content[0].Text), &out); err != nil {
		return fmt.Errorf("tool text is not JSON: %.300s", body)
	}
	if out.Source.Timezone != "Europe/Berlin" || out.Target.Timezone != "Europe/Dublin" ||
		!strings.Contains(out.Source.Datetime, "T09:00:00") || out.Target.Datetime == "" {
		return fmt.Errorf("wrong conversion: %.300s", body)
	}
	return nil
}

// expected is what one correct answer to the payload looks like on the
// wire, for checking the averages the load tools report.
type expected struct {
	total int // whole response, head and body, keep-alive
	body  int
}

func (s *server) probeExpected() (expected, error) {
	c, err := dialRaw(s.addr)
	if err != nil {
		return expected{}, err
	}
	defer c.Close()
	var e expected
	for i := 0; i < 3; i++ { // the first may differ (a cold cache); the last counts
		r, err := c.do(postRPC(s.jwt, s.h.payload, false))
		if err != nil {
			return e, err
		}
		if err := verifyConvertTime(r.status, r.body); err != nil {
			return e, fmt.Errorf("%s: %v", s.name, err)
		}
		e = expected{total: r.total, body: len(r.body)}
	}
	return e, nil
}

// Prometheus text, parsed just enough for the series the bench reads.

type series struct {
	name   string
	labels map[string]string
	value  float64
}

type metrics []series

func parseMetrics(b []byte) (metrics, error) {
	var m metrics
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			return nil, fmt.Errorf("bad metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("bad metrics line %q", line)
		}
		s := series{value: v, labels: map[string]string{}}
		head := line[:sp]
		if i := strings.IndexByte(head, '{'); i >= 0 {
			s.name = head[:i]
			for _, kv := range strings.Split(strings.TrimSuffix(head[i+1:], "}"), ",") {
				if k, v, ok := strings.Cut(kv, "="); ok {
					s.labels[k] = strings.Trim(v, `"`)
				}
			}
		} else {
			s.name = head
		}
		m = append(m, s)
	}
	return m, nil
}

func scrape(addr string) (metrics, error) { return scrapeWithin(addr, ioTimeout) }

func scrapeWithin(addr string, timeout time.Duration) (metrics, error) {
	r, err := fetchWithin(addr, getReq("/metrics", true), timeout)
	if err != nil {
		return nil, err
	}
	if r.status != 200 {
		return nil, fmt.Errorf("/metrics: status %d", r.status)
	}
	return parseMetrics(r.body)
}

// sum adds every series of a name whose labels include match (k, v, ...).
func (m metrics) sum(name string, match ...string) float64 {
	var t float64
outer:
	for _, s := range m {
		if s.name != name {
			continue
		}
		for i := 0; i+1 < len(match); i += 2 {
			if s.labels[match[i]] != match[i+1] {
				continue outer
			}
		}
		t += s.value
	}
	return t
}

// workerSeries is one worker slot as /metrics reports it: the slot's
// numbers are summed over its live processes (two for a moment while one
// is replaced), and worker_info names the processes.
type workerSeries struct {
	slot   int
	pids   map[int]bool // live processes of the slot
	served float64      // drops when a replaced process exits
	ready  int          // processes of the slot in the ready state
	rss    float64
}

// workers are the worker slots the status table lists.
func (m metrics) workers() map[int]*workerSeries {
	ws := map[int]*workerSeries{}
	get := func(s series) *workerSeries {
		slot, _ := strconv.Atoi(s.labels["slot"])
		w := ws[slot]
		if w == nil {
			w = &workerSeries{slot: slot, pids: map[int]bool{}}
			ws[slot] = w
		}
		return w
	}
	for _, s := range m {
		switch s.name {
		case "mcpgateway_worker_info":
			pid, _ := strconv.Atoi(s.labels["pid"])
			get(s).pids[pid] = true
		case "mcpgateway_worker_requests_total":
			get(s).served = s.value
		case "mcpgateway_worker_state":
			if s.labels["state"] == "ready" {
				get(s).ready += int(s.value)
			}
		case "mcpgateway_worker_resident_memory_bytes":
			get(s).rss = s.value
		}
	}
	return ws
}

// readyWorkers counts the worker processes in the ready state.
func (m metrics) readyWorkers() int {
	n := 0
	for _, w := range m.workers() {
		n += w.ready
	}
	return n
}

func (m metrics) requests() float64 { return m.sum("mcpgateway_http_requests_total") }
