package store

import (
	"context"
	"testing"
)

// Steady-state lookups, per cache type (SQLite; "none" shows the cost of a
// database round trip for comparison). Run with:
//
//	go test -run '^$' -bench 'Hit' -benchmem ./store/
func benchStore(b *testing.B, ct string) *Store {
	o := testOptions(b, sqliteURL(b), ct)
	if ct == CacheRedis {
		o.CachePrefix = redisPrefix(b)
	}
	s := openMigrated(b, o)
	ctx := context.Background()
	if _, err := s.Tools(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := s.User(ctx, "admin@example.com"); err != nil {
		b.Fatal(err)
	}
	return s
}

func BenchmarkUserHit(b *testing.B) {
	for _, ct := range cacheTypes {
		b.Run(ct, func(b *testing.B) {
			s := benchStore(b, ct)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.User(ctx, "admin@example.com"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkToolsHit(b *testing.B) {
	for _, ct := range cacheTypes {
		b.Run(ct, func(b *testing.B) {
			s := benchStore(b, ct)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Tools(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Parallel hits: what two cores' worth of request goroutines see.
func BenchmarkUserHitParallel(b *testing.B) {
	for _, ct := range []string{CacheMemory, CacheDatabase, CacheRedis} {
		b.Run(ct, func(b *testing.B) {
			s := benchStore(b, ct)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.User(ctx, "admin@example.com"); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
