package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// CheckCapacity checks, before workers start, that their pools can fit in
// the PostgreSQL server: workers*(PoolSize+MaxOverflow) connections must fit
// in max_connections minus the reserved slots minus the connections other
// clients hold right now. Other instances whose pools have not grown to their
// maximum yet are not counted at their maximum: the check catches impossible
// settings, it cannot reserve capacity. SQLite has no such limit: nil.
func CheckCapacity(ctx context.Context, o Options, workers int) error {
	o, err := o.withDefaults()
	if err != nil {
		return err
	}
	dialect, dsn, err := ParseDatabaseURL(o.DatabaseURL)
	if err != nil {
		return err
	}
	if dialect != DialectPostgres {
		return nil
	}
	if workers < 1 {
		workers = 1
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("check database capacity: %w", err)
	}
	if cfg.ConnectTimeout <= 0 || cfg.ConnectTimeout > o.PoolTimeout {
		cfg.ConnectTimeout = o.PoolTimeout
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("check database capacity: connect postgresql: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	// reserved_connections exists from PostgreSQL 16; missing_ok makes it
	// NULL before that. Client backends other than this one are "in use".
	var maxConns, superReserved, reserved, inUse int
	err = conn.QueryRow(ctx, `SELECT
		current_setting('max_connections')::int,
		current_setting('superuser_reserved_connections')::int,
		COALESCE(current_setting('reserved_connections', true), '0')::int,
		(SELECT count(*) FROM pg_stat_activity
		  WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())::int`).
		Scan(&maxConns, &superReserved, &reserved, &inUse)
	if err != nil {
		return fmt.Errorf("check database capacity: read server limits: %w", err)
	}

	perWorker := o.maxConns()
	need := workers * perWorker
	avail := maxConns - superReserved - reserved - inUse
	if need <= avail {
		o.Logger.Named("store").Info("database capacity ok", zap.Int("workers", workers), zap.Int("per_worker", perWorker),
			zap.Int("needed", need), zap.Int("available", avail))
		return nil
	}
	var advice []string
	if n := avail / perWorker; n >= 1 {
		advice = append(advice, fmt.Sprintf("run at most %d workers with this pool", n))
	}
	if n := avail / workers; n >= 1 {
		advice = append(advice, fmt.Sprintf("lower DB_POOL_SIZE+DB_MAX_OVERFLOW to at most %d per worker", n))
	}
	advice = append(advice, "raise max_connections on the server")
	if avail <= 0 {
		advice = append(advice, "stop other clients")
	}
	return fmt.Errorf("database capacity: %d workers × (DB_POOL_SIZE %d + DB_MAX_OVERFLOW %d) = %d connections, "+
		"but PostgreSQL has %d available (max_connections %d − superuser_reserved_connections %d − "+
		"reserved_connections %d − %d in use by other clients); %s",
		workers, o.PoolSize, o.MaxOverflow, need, avail, maxConns, superReserved, reserved, inUse,
		strings.Join(advice, ", or "))
}
