package worker

import "testing"

func TestTrackerExpiresOnlyOverdueRequestsOnce(t *testing.T) {
	var tr tracker
	called := 0
	a := tr.begin(100, nil, func() { called++ })
	b := tr.begin(200, nil, nil)
	c := tr.begin(300, nil, func() { called++ })
	if got := tr.oldest(); got != 100 {
		t.Fatalf("oldest = %d, want 100", got)
	}
	calls := tr.expire(250)
	if n := len(calls); n != 2 {
		t.Fatalf("expired %d, want 2", n)
	}
	for _, e := range calls {
		if e.onTimeout != nil {
			e.onTimeout()
		}
	}
	if called != 1 {
		t.Fatalf("%d callbacks ran, want 1 (a; b has none)", called)
	}
	if n := len(tr.expire(250)); n != 0 {
		t.Fatalf("expired again: %d", n)
	}
	if got := tr.oldest(); got != 300 {
		t.Fatalf("oldest ignoring abandoned = %d, want 300", got)
	}
	if !tr.end(b) || !tr.end(a) {
		t.Fatal("abandoned requests not reported as such")
	}
	if tr.end(c) {
		t.Fatal("a request in time reported abandoned")
	}
	if tr.head != nil || tr.tail != nil || tr.oldest() != 0 {
		t.Fatal("tracker not empty")
	}
}

func BenchmarkTrackerBeginEnd(b *testing.B) {
	var tr tracker
	for i := 0; i < b.N; i++ {
		tr.end(tr.begin(int64(i), nil, nil))
	}
}
