package proctest

import (
	"net/http"
	"sync"
	"time"
)

// Prober asks for a URL on a fresh connection at a steady pace, the way a
// health checker does, and keeps what did not come back a 200 in time.
type Prober struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	n    int
	bad  []string
}

// StartProbing GETs url every interval on a new connection, each within
// timeout, until Stop.
func StartProbing(url string, interval, timeout time.Duration) *Prober {
	p := &Prober{stop: make(chan struct{}), done: make(chan struct{})}
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			case <-time.After(interval):
			}
			resp, err := c.Get(url)
			p.mu.Lock()
			p.n++
			if err != nil {
				p.bad = append(p.bad, err.Error())
			} else {
				if resp.StatusCode != http.StatusOK {
					p.bad = append(p.bad, resp.Status)
				}
				resp.Body.Close()
			}
			p.mu.Unlock()
		}
	}()
	return p
}

// Stop ends the probing and reports how many probes ran and the failures.
func (p *Prober) Stop() (probes int, failures []string) {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n, p.bad
}
