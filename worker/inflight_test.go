package worker

import "testing"

func TestTrackerExpiresOnlyOverdueRequestsOnce(t *testing.T) {
	var tr tracker
	a := tr.begin(nil, 100)
	b := tr.begin(nil, 200)
	c := tr.begin(nil, 300)
	if got := tr.oldest(); got != 100 {
		t.Fatalf("oldest = %d, want 100", got)
	}
	if n := len(tr.expire(250)); n != 2 {
		t.Fatalf("expired %d, want 2", n)
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
		tr.end(tr.begin(nil, int64(i)))
	}
}
