// Package shm holds counters in shared memory for the worker processes of
// one master: a file in /dev/shm (protocol.Table.SharedPath) mapped by
// each of them.
package shm

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	magic = 0x6d6370676e747231 // "mcpgntr1"
	size  = 4096
)

// Counter is one 64-bit word that every process mapping the same file
// reads and adds to atomically.
type Counter struct {
	word *atomic.Uint64
	mem  []byte
}

// OpenCounter maps the counter at path, creating it (zero) when it does
// not exist. Several processes may open the same path at once.
func OpenCounter(path string) (*Counter, error) {
	mem, err := Map(path, size)
	if err != nil {
		return nil, fmt.Errorf("shared counter: %w", err)
	}
	words := unsafe.Slice((*uint64)(unsafe.Pointer(&mem[0])), 2)
	atomic.CompareAndSwapUint64(&words[0], 0, magic)
	if atomic.LoadUint64(&words[0]) != magic {
		_ = unix.Munmap(mem)
		return nil, errors.New("shared counter: " + path + " has another layout (another release?)")
	}
	return &Counter{word: (*atomic.Uint64)(unsafe.Pointer(&words[1])), mem: mem}, nil
}

// Map maps the file at path, of size bytes, shared and read-write,
// creating it (zeroed) when it does not exist; several processes may map
// the same path at once. Unmap it with unix.Munmap.
func Map(path string, size int) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close() // the mapping outlives the descriptor
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	switch {
	case st.Size() == 0:
		// Several processes truncating to the same size is harmless: the
		// file only ever grows from 0 to size.
		if err := f.Truncate(int64(size)); err != nil {
			return nil, fmt.Errorf("size %s: %w", path, err)
		}
	case st.Size() != int64(size):
		return nil, fmt.Errorf("%s has %d bytes, want %d (another release?)", path, st.Size(), size)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", path, err)
	}
	return mem, nil
}

// Word is the shared word itself, for a reader on a hot path.
func (c *Counter) Word() *atomic.Uint64 { return c.word }

// Close unmaps the counter; Word must not be used afterwards.
func (c *Counter) Close() error {
	if c.mem == nil {
		return nil
	}
	err := unix.Munmap(c.mem)
	c.mem, c.word = nil, nil
	return err
}
