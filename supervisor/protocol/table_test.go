package protocol

import (
	"sync"
	"testing"
)

func TestFoldKeepsTotalsExactUnderConcurrentSnapshots(t *testing.T) {
	tb, err := CreateTable(8)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	tb.Header().Store(HMaxRow, 8)
	const rounds, perRow = 200, 7
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() { // a /metrics reader: the total may only grow
		defer wg.Done()
		var last uint64
		for {
			select {
			case <-stop:
				return
			default:
			}
			s := tb.Snapshot()
			if s.Total.Served < last {
				t.Errorf("total went backwards: %d after %d", s.Total.Served, last)
				return
			}
			last = s.Total.Served
		}
	}()
	for i := 0; i < rounds; i++ {
		row := 1 + i%8
		r := tb.Row(row)
		r.Store(FPid, uint64(1000+i))
		r.Add(CServed, perRow)
		r.Add(C2xx, perRow)
		tb.Fold(row)
	}
	close(stop)
	wg.Wait()
	s := tb.Snapshot()
	if s.Total.Served != rounds*perRow || s.Total.Status[1] != rounds*perRow {
		t.Fatalf("total served %d, 2xx %d, want %d", s.Total.Served, s.Total.Status[1], rounds*perRow)
	}
	if len(s.Workers) != 0 {
		t.Fatalf("folded rows still listed: %+v", s.Workers)
	}
}

func TestAttachSharesMemory(t *testing.T) {
	tb, err := CreateTable(4)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	other, err := OpenMasterTable(0) // no such master
	if err == nil {
		other.Close()
		t.Fatal("opened a table of pid 0")
	}
	f := tb.File()
	view, err := AttachTable(f, false)
	if err != nil {
		t.Fatal(err)
	}
	tb.Row(2).Store(FInFlight, 42)
	if got := view.Row(2).Load(FInFlight); got != 42 {
		t.Fatalf("second mapping reads %d, want 42", got)
	}
}

func TestBucketIndex(t *testing.T) {
	for _, c := range []struct {
		ns   int64
		want int
	}{{0, 0}, {500_000, 0}, {500_001, 1}, {3_000_000, 3}, {10_000_000_000, len(Buckets) - 1}, {11_000_000_000, len(Buckets)}} {
		if got := BucketIndex(c.ns); got != c.want {
			t.Errorf("BucketIndex(%d) = %d, want %d", c.ns, got, c.want)
		}
	}
}

func TestIdentityRoundTrip(t *testing.T) {
	id := Identity{Slot: 2, Generation: 7, Row: 9, Listeners: 1, MasterPID: 123, MaxRequests: 5000}
	for _, kv := range id.Env() {
		for i := range kv {
			if kv[i] == '=' {
				t.Setenv(kv[:i], kv[i+1:])
				break
			}
		}
	}
	got, err := ReadIdentity()
	if err != nil || got != id {
		t.Fatalf("ReadIdentity = %+v, %v; want %+v", got, err, id)
	}
	t.Setenv(EnvRow, "x")
	if _, err := ReadIdentity(); err == nil {
		t.Fatal("bad row accepted")
	}
}
