package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Real worker processes: this test binary re-executed. They migrate the same
// fresh SQLite file at once, write to it at once, then wait for a user that
// the parent creates; each must see it within one second.
func TestMultiProcess(t *testing.T) {
	for _, ct := range []string{CacheMemory, CacheDatabase, CacheRedis} {
		t.Run(ct, func(t *testing.T) {
			t.Parallel()
			o := testOptions(t, sqliteURL(t), ct)
			if ct == CacheRedis {
				o.CachePrefix = redisPrefix(t)
			}
			const workers = 3
			type child struct {
				cmd   *exec.Cmd
				lines *bufio.Scanner
			}
			var kids []child
			for i := 0; i < workers; i++ {
				cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWorker$", "-test.count=1")
				cmd.Env = append(os.Environ(), "MCPGW_STORE_HELPER=1", "MCPGW_STORE_URL="+o.DatabaseURL,
					"MCPGW_STORE_CACHE="+ct, "MCPGW_STORE_PREFIX="+o.CachePrefix, "MCPGW_STORE_REDIS="+o.RedisURL)
				cmd.Stderr = os.Stderr
				out, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
				kids = append(kids, child{cmd, bufio.NewScanner(out)})
			}
			// expect reads the child's next protocol line.
			expect := func(k child, prefix string) string {
				for k.lines.Scan() {
					if line := k.lines.Text(); strings.HasPrefix(line, prefix) {
						return strings.TrimPrefix(line, prefix)
					}
				}
				t.Fatalf("worker %d ended without printing %q", k.cmd.Process.Pid, prefix)
				return ""
			}
			for _, k := range kids {
				expect(k, "READY")
			}
			time.Sleep(3 * checkInterval) // steady state: the flag user is a cached negative

			s := openStore(t, o)
			if err := s.PutUser(context.Background(), User{Email: "flag@example.com", Active: true}); err != nil {
				t.Fatal(err)
			}
			wrote := time.Now()
			for _, k := range kids {
				// "SEEN <start of the last lookup that returned the old
				// value> <when the new value was seen>", Unix nanoseconds.
				var staleNS, seenNS int64
				if _, err := fmt.Sscan(expect(k, "SEEN "), &staleNS, &seenNS); err != nil {
					t.Fatal(err)
				}
				t.Logf("worker %d saw the change after %s", k.cmd.Process.Pid, time.Unix(0, seenNS).Sub(wrote))
				if lag := time.Unix(0, staleNS).Sub(wrote); lag > time.Second {
					t.Errorf("worker %d: a lookup begun %s after the write returned the old value", k.cmd.Process.Pid, lag)
				}
				if err := k.cmd.Wait(); err != nil {
					t.Errorf("worker %d: %v", k.cmd.Process.Pid, err)
				}
			}
			// Every worker's writes landed.
			for _, k := range kids {
				if _, err := s.User(context.Background(), fmt.Sprintf("w%d-29@example.com", k.cmd.Process.Pid)); err != nil {
					t.Errorf("worker %d's last write: %v", k.cmd.Process.Pid, err)
				}
			}
		})
	}
}

// TestHelperWorker is the worker side of TestMultiProcess; run alone it does
// nothing.
func TestHelperWorker(t *testing.T) {
	if os.Getenv("MCPGW_STORE_HELPER") != "1" {
		return
	}
	if err := helperWorker(); err != nil {
		fmt.Fprintln(os.Stderr, "helper worker:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func helperWorker() error {
	ctx := context.Background()
	o := Options{
		DatabaseURL: os.Getenv("MCPGW_STORE_URL"),
		PoolSize:    2, MaxOverflow: 2, PoolTimeout: 10 * time.Second,
		CacheType:   os.Getenv("MCPGW_STORE_CACHE"),
		CachePrefix: os.Getenv("MCPGW_STORE_PREFIX"),
		RedisURL:    os.Getenv("MCPGW_STORE_REDIS"),
	}
	if err := Migrate(ctx, o); err != nil {
		return err
	}
	s, err := Open(ctx, o)
	if err != nil {
		return err
	}
	defer s.Close()
	pid := os.Getpid()
	for i := 0; i < 30; i++ {
		email := fmt.Sprintf("w%d-%d@example.com", pid, i)
		if err := s.PutUser(ctx, User{Email: email, Active: true}); err != nil {
			return err
		}
		if u, err := s.User(ctx, email); err != nil || !u.Active {
			return fmt.Errorf("read own write %s: %+v, %v", email, u, err)
		}
	}
	fmt.Println("READY")
	deadline := time.Now().Add(10 * time.Second)
	var lastStale time.Time
	for time.Now().Before(deadline) {
		began := time.Now()
		u, err := s.User(ctx, "flag@example.com")
		if err == nil && u.Active {
			fmt.Printf("SEEN %d %d\n", lastStale.UnixNano(), time.Now().UnixNano())
			return nil
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		lastStale = began
		time.Sleep(time.Millisecond)
	}
	return errors.New("flag@example.com never seen")
}
