package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"
)

// pgDatabase is the fresh PostgreSQL database of this run, dropped at the end.
type pgDatabase struct {
	admin string // URL of the maintenance database
	name  string
	url   string
}

// postgres creates the run's database on first use.
func (h *harness) postgres() (*pgDatabase, error) {
	if h.pg != nil {
		return h.pg, nil
	}
	base := strings.TrimSuffix(h.c.pgURL, "/")
	db := &pgDatabase{admin: base + "/postgres", name: fmt.Sprintf("mcpgw_bench_%d_%d", os.Getpid(), time.Now().Unix())}
	db.url = base + "/" + db.name
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, db.admin)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL at %s: %w (start it with make services, or pass -pg '' to skip)", base, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db.name}.Sanitize()); err != nil {
		return nil, fmt.Errorf("create database %s: %w", db.name, err)
	}
	h.pg = db
	h.logf("   created PostgreSQL database %s", db.name)
	return db, nil
}

func (db *pgDatabase) drop(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, db.admin)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db.name}.Sanitize()+" WITH (FORCE)")
	return err
}

// deleteRedisKeys removes the keys this run's servers wrote (they all start
// with the run's CACHE_PREFIX).
func deleteRedisKeys(ctx context.Context, addr string, db int, prefix string) error {
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, SelectDB: db, DisableCache: true})
	if err != nil {
		return err
	}
	defer c.Close()
	var cursor uint64
	for {
		e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match(prefix+"*").Count(1000).Build()).AsScanEntry()
		if err != nil {
			return err
		}
		if len(e.Elements) > 0 {
			if err := c.Do(ctx, c.B().Del().Key(e.Elements...).Build()).Error(); err != nil {
				return err
			}
		}
		if cursor = e.Cursor; cursor == 0 {
			return nil
		}
	}
}
