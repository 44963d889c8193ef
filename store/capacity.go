package store

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// CheckCapacity checks, before workers first start, that their pools can
// fit in the PostgreSQL server: workers*(PoolSize+MaxOverflow) connections
// must fit in max_connections minus the reserved slots minus the connections
// other clients hold right now. Other instances whose pools have not grown
// to their maximum yet are not counted at their maximum: the check catches
// impossible settings, it cannot reserve capacity. SQLite has no such limit:
// nil.
//
// Every session but the check's own counts as another client's here, this
// instance's included: use it when the server starts, and when a new master
// starts beside an old one (USR2), whose workers keep serving until WINCH.
func CheckCapacity(ctx context.Context, o Options, workers int) error {
	return checkCapacity(ctx, o, workers, 0)
}

// CheckReloadCapacity checks, before a reload (HUP) replaces the running
// workers of this instance (Options.Instance) make-before-break, that the
// new workers fit beside what the old ones hold while they are replaced.
// The instance's own sessions are counted apart from other clients':
//
//   - when the reload is over, the new pools need workers*(PoolSize+MaxOverflow)
//     connections and the old workers hold none;
//   - during it, each old worker keeps the sessions it holds now until its
//     successor is ready and it has drained. overlap is how many successors
//     start at once: 1 when slots are replaced one at a time, workers (or 0)
//     when every slot's successor starts at once. With every slot at once,
//     the peak is all the old sessions plus all the new pools.
//
// The error says how much a reload would need, what other clients hold, and
// how many workers at a time would fit.
func CheckReloadCapacity(ctx context.Context, o Options, workers, overlap int) error {
	if workers < 1 {
		workers = 1
	}
	if overlap <= 0 || overlap > workers {
		overlap = workers
	}
	return checkCapacity(ctx, o, workers, overlap)
}

// serverLimits are PostgreSQL's connection limits and who holds what.
type serverLimits struct {
	maxConns, superReserved, reserved int
	foreign                           int   // sessions of other clients
	own                               []int // sessions of this instance, per process, largest first
}

// room is what the server leaves for this instance: its own sessions are
// not subtracted.
func (l serverLimits) room() int { return l.maxConns - l.superReserved - l.reserved - l.foreign }

func (l serverLimits) ownTotal() int {
	n := 0
	for _, c := range l.own {
		n += c
	}
	return n
}

// checkCapacity is CheckCapacity when overlap is 0, CheckReloadCapacity
// otherwise.
func checkCapacity(ctx context.Context, o Options, workers, overlap int) error {
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
	base := cfg.RuntimeParams["application_name"] // before nameSession replaces it
	nameSession(cfg, o)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("check database capacity: connect postgresql: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	own := "" // on first start every session is another client's
	if overlap > 0 {
		own = sessionPrefix(base, o.Instance)
	}
	l, err := readLimits(ctx, conn, own)
	if err != nil {
		return err
	}
	log := o.Logger.Named("store")
	perWorker := o.maxConns()
	if overlap == 0 {
		return firstStart(log, l, o, workers, perWorker)
	}
	return reload(log, l, o, workers, perWorker, overlap)
}

// readLimits reads the server's limits and counts the client sessions other
// than the check's own, by application_name: those starting with own (when
// not empty) are this instance's.
func readLimits(ctx context.Context, conn *pgx.Conn, own string) (serverLimits, error) {
	var l serverLimits
	// reserved_connections exists from PostgreSQL 16; missing_ok makes it
	// NULL before that.
	err := conn.QueryRow(ctx, `SELECT
		current_setting('max_connections')::int,
		current_setting('superuser_reserved_connections')::int,
		COALESCE(current_setting('reserved_connections', true), '0')::int`).
		Scan(&l.maxConns, &l.superReserved, &l.reserved)
	if err != nil {
		return l, fmt.Errorf("check database capacity: read server limits: %w", err)
	}
	// Client backends are what max_connections limits. A role without
	// pg_read_all_stats sees backend_type NULL on other roles' sessions;
	// those with a database are client backends too (the server's own
	// processes have none), so they count.
	rows, err := conn.Query(ctx, `SELECT COALESCE(application_name, ''), count(*)::int
		FROM pg_stat_activity
		WHERE pid <> pg_backend_pid()
		  AND (backend_type = 'client backend' OR (backend_type IS NULL AND datid IS NOT NULL))
		GROUP BY 1`)
	if err != nil {
		return l, fmt.Errorf("check database capacity: read sessions: %w", err)
	}
	var name string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&name, &n}, func() error {
		if own != "" && strings.HasPrefix(name, own) {
			l.own = append(l.own, n) // one name per process: "<own><pid>"
		} else {
			l.foreign += n
		}
		return nil
	})
	if err != nil {
		return l, fmt.Errorf("check database capacity: read sessions: %w", err)
	}
	slices.SortFunc(l.own, func(a, b int) int { return b - a })
	return l, nil
}

// firstStart: every session the check does not hold is in use.
func firstStart(log *zap.Logger, l serverLimits, o Options, workers, perWorker int) error {
	inUse := l.foreign + l.ownTotal()
	need := workers * perWorker
	avail := l.room() - l.ownTotal()
	if need <= avail {
		log.Info("database capacity ok", zap.Int("workers", workers), zap.Int("per_worker", perWorker),
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
		workers, o.PoolSize, o.MaxOverflow, need, avail, l.maxConns, l.superReserved, l.reserved, inUse,
		strings.Join(advice, ", or "))
}

// reloadPeak bounds the connections open at once while workers new workers
// of perWorker connections each replace the old processes (own, largest
// first), overlap at a time.
//
// A slot holds its old worker's sessions until its successor takes over,
// then at most perWorker: over the whole roll that is at most
// max(old, perWorker) per slot. A slot being replaced holds both at once:
// up to min(old, perWorker) more, for the overlap slots replaced together.
// When every slot is replaced at once, or when there are more old processes
// than slots (a reload that also scales down, or old workers still
// draining), the bound is simply every old session plus every new pool.
func reloadPeak(own []int, workers, perWorker, overlap int) int {
	all := workers * perWorker
	for _, c := range own {
		all += c
	}
	if overlap >= workers || len(own) > workers {
		return all
	}
	peak := 0
	for slot := range workers {
		old := 0 // a slot without an old worker (a reload that scales up)
		if slot < len(own) {
			old = own[slot]
		}
		peak += max(old, perWorker)
		if slot < overlap { // own is sorted: the worst slots to replace together
			peak += min(old, perWorker)
		}
	}
	return min(peak, all)
}

// reload: this instance's sessions are counted apart (see CheckReloadCapacity).
func reload(log *zap.Logger, l serverLimits, o Options, workers, perWorker, overlap int) error {
	room := l.room()
	steady := workers * perWorker
	peak := reloadPeak(l.own, workers, perWorker, overlap)
	if peak <= room {
		log.Info("database capacity ok for the reload", zap.Int("workers", workers), zap.Int("per_worker", perWorker),
			zap.Int("overlap", overlap), zap.Int("needed_at_peak", peak), zap.Int("available", room),
			zap.Int("own_sessions", l.ownTotal()), zap.Int("other_sessions", l.foreign))
		return nil
	}
	var advice []string
	if steady <= room {
		// The new configuration fits; only the overlap does not.
		fit := 0
		for k := overlap - 1; k >= 1; k-- {
			if reloadPeak(l.own, workers, perWorker, k) <= room {
				fit = k
				break
			}
		}
		switch {
		case fit == 1:
			advice = append(advice, "replacing one worker at a time would fit")
		case fit > 1:
			advice = append(advice, fmt.Sprintf("replacing at most %d workers at a time would fit", fit))
		}
		advice = append(advice, fmt.Sprintf("restart instead of reloading: a restart needs %d", steady))
	} else {
		// The new configuration does not fit even after the reload: say
		// what would, counting the same overlap.
		for n := workers - 1; n >= 1; n-- {
			if reloadPeak(l.own, n, perWorker, min(overlap, n)) <= room {
				advice = append(advice, fmt.Sprintf("run at most %d workers with this pool", n))
				break
			}
		}
		for p := perWorker - 1; p >= 1; p-- {
			if reloadPeak(l.own, workers, p, overlap) <= room {
				advice = append(advice, fmt.Sprintf("lower DB_POOL_SIZE+DB_MAX_OVERFLOW to at most %d per worker", p))
				break
			}
		}
	}
	advice = append(advice, "raise max_connections on the server")
	if room <= 0 {
		advice = append(advice, "stop other clients")
	}
	return fmt.Errorf("database capacity for the reload: %d workers × (DB_POOL_SIZE %d + DB_MAX_OVERFLOW %d) = %d connections, "+
		"and while %d at a time start beside the workers they replace (which hold %d sessions in %d processes) "+
		"up to %d are open at once, but PostgreSQL has %d for this server (max_connections %d − "+
		"superuser_reserved_connections %d − reserved_connections %d − %d in use by other clients); %s",
		workers, o.PoolSize, o.MaxOverflow, steady, overlap, l.ownTotal(), len(l.own), peak, room,
		l.maxConns, l.superReserved, l.reserved, l.foreign, strings.Join(advice, ", or "))
}
