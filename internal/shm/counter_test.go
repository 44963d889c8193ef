package shm

import (
	"path/filepath"
	"testing"
)

// Two mappings of one file (as two processes have) see each other's adds.
func TestCounterIsShared(t *testing.T) {
	path := filepath.Join(t.TempDir(), "writes")
	a, err := OpenCounter(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := OpenCounter(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a.Word().Add(3)
	if got := b.Word().Load(); got != 3 {
		t.Fatalf("the other mapping reads %d, want 3", got)
	}
	b.Word().Add(1)
	if got := a.Word().Load(); got != 4 {
		t.Fatalf("reads %d, want 4", got)
	}
}
