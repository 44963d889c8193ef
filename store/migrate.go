package store

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// migration is one schema version. Versions are applied in order, each once,
// and recorded in schema_migrations; add new ones at the end of migrations.
type migration struct {
	version int
	name    string
	// stmts returns the statements for a dialect (the few DDL differences
	// between SQLite and PostgreSQL live here).
	stmts func(dialect string) []string
}

var migrations = []migration{
	{version: 1, name: "tools, users and cache coherence tables", stmts: schemaV1},
	{version: 2, name: "seed convert_time and get_system_time", stmts: seedToolsV2},
	{version: 3, name: "revocations (token jti, MCP sessions)", stmts: revocationsV3},
	{version: 4, name: "upstream MCP servers (gateways) and their tools", stmts: gatewaysV4},
	{version: 5, name: "REST tools: their HTTP endpoint", stmts: restToolsV5},             // rest.go
	{version: 6, name: "virtual servers", stmts: serversV6},                               // servers.go
	{version: 7, name: "resumable MCP stream events", stmts: streamEventsV7},              // events.go
	{version: 8, name: "virtual servers: resources, prompts, gateways", stmts: serversV8}, // servers.go
}

// gatewaysV4 is the table of gateways.go, and the tools' link to the
// upstream that serves them (NULL: a tool of the gateway itself).
// auth_header_value is sealed (AES-GCM, AUTH_ENCRYPTION_SECRET), never
// stored in clear.
func gatewaysV4(dialect string) []string {
	ts := timestampColumn(dialect)
	return []string{
		`CREATE TABLE gateways (
			name              TEXT PRIMARY KEY,
			url               TEXT NOT NULL,
			transport         TEXT NOT NULL DEFAULT 'streamablehttp',
			auth_header_name  TEXT NOT NULL DEFAULT '',
			auth_header_value TEXT NOT NULL DEFAULT '',
			enabled           BOOLEAN NOT NULL DEFAULT TRUE,
			created_at        ` + ts + `,
			updated_at        ` + ts + `
		)`,
		`ALTER TABLE tools ADD COLUMN gateway TEXT`,
		`ALTER TABLE tools ADD COLUMN upstream_name TEXT`,
		`ALTER TABLE tools ADD COLUMN output_schema TEXT`,
	}
}

// revocationsV3 is the table of revocation.go: times are Unix seconds, so
// both dialects compare them the same way.
func revocationsV3(string) []string {
	return []string{
		`CREATE TABLE revocations (
			kind       TEXT NOT NULL,
			id         TEXT NOT NULL,
			expires_at BIGINT NOT NULL,
			revoked_at BIGINT NOT NULL,
			revoked_by TEXT NOT NULL DEFAULT '',
			reason     TEXT NOT NULL DEFAULT '',
			PRIMARY KEY (kind, id)
		)`,
		`CREATE INDEX revocations_expires_at ON revocations (expires_at)`,
	}
}

// streamEventsV7 is the event log of resumable MCP streams (events.go),
// used by every cache type but redis. Like revocationsV3, times are Unix
// seconds. data is one compact JSON-RPC message as text. expires_at is the
// stream's (every row of a stream is extended with it), indexed for the
// purge.
func streamEventsV7(string) []string {
	return []string{
		`CREATE TABLE stream_events (
			stream     TEXT NOT NULL,
			seq        BIGINT NOT NULL,
			data       TEXT NOT NULL,
			final      BOOLEAN NOT NULL DEFAULT FALSE,
			expires_at BIGINT NOT NULL,
			PRIMARY KEY (stream, seq)
		)`,
		`CREATE INDEX stream_events_expires_at ON stream_events (expires_at)`,
	}
}

// timestampColumn is a column type with a default of now.
func timestampColumn(dialect string) string {
	if dialect == DialectPostgres {
		return "TIMESTAMPTZ NOT NULL DEFAULT now()"
	}
	return "TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP"
}

func schemaV1(dialect string) []string {
	ts := timestampColumn(dialect)
	return []string{
		// input_schema is kept as text, byte for byte what PutTool was given,
		// so tools/list returns exactly what the operator wrote.
		`CREATE TABLE tools (
			name         TEXT PRIMARY KEY,
			description  TEXT NOT NULL DEFAULT '',
			input_schema TEXT NOT NULL,
			enabled      BOOLEAN NOT NULL DEFAULT TRUE,
			updated_at   ` + ts + `
		)`,
		`CREATE TABLE users (
			email      TEXT PRIMARY KEY,
			active     BOOLEAN NOT NULL DEFAULT TRUE,
			is_admin   BOOLEAN NOT NULL DEFAULT FALSE,
			created_at ` + ts + `,
			updated_at ` + ts + `
		)`,
		// One row: the cache epoch. Every write bumps it in its own
		// transaction; every worker polls it to learn that something changed.
		`CREATE TABLE cache_epoch (
			id    INTEGER PRIMARY KEY CHECK (id = 1),
			epoch BIGINT NOT NULL
		)`,
		`INSERT INTO cache_epoch (id, epoch) VALUES (1, 0)`,
		// Which cache keys each epoch changed, so CACHE_TYPE=database drops
		// only those. Pruned by writers (keepChanges).
		`CREATE TABLE cache_changes (
			epoch     BIGINT NOT NULL,
			cache_key TEXT NOT NULL,
			PRIMARY KEY (epoch, cache_key)
		)`,
	}
}

// Seed tool schemas: real JSON Schemas, as tools/list shows them.
const (
	convertTimeSchema = `{"type":"object","properties":{` +
		`"source_timezone":{"type":"string","description":"IANA time zone of the given time, e.g. Europe/Berlin"},` +
		`"target_timezone":{"type":"string","description":"IANA time zone to convert to, e.g. Europe/Dublin"},` +
		`"time":{"type":"string","description":"HH:MM (today in the source zone), RFC 3339, or YYYY-MM-DD HH:MM:SS"}},` +
		`"required":["source_timezone","target_timezone","time"],"additionalProperties":false}`
	systemTimeSchema = `{"type":"object","properties":{` +
		`"timezone":{"type":"string","description":"IANA time zone, e.g. Europe/Dublin","default":"UTC"}},` +
		`"additionalProperties":false}`
)

func seedToolsV2(string) []string {
	return []string{
		`INSERT INTO tools (name, description, input_schema, enabled) VALUES
			('convert_time', 'Convert a time between two IANA time zones.', '` + convertTimeSchema + `', TRUE),
			('get_system_time', 'Get the current time in an IANA time zone.', '` + systemTimeSchema + `', TRUE)
		ON CONFLICT (name) DO NOTHING`,
	}
}

// Migrate brings the schema up to date, seeds the tools and creates the
// platform admin. The master runs it once before starting workers. It is
// idempotent and safe when several instances run it at once: PostgreSQL
// serialises them with an advisory lock, SQLite with BEGIN IMMEDIATE, and each
// finds the versions the other applied in schema_migrations.
func Migrate(ctx context.Context, o Options) error {
	o, err := o.withDefaults()
	if err != nil {
		return err
	}
	db, err := openDatabase(o)
	if err != nil {
		return err
	}
	defer db.close()
	start := time.Now()
	if err := db.prepare(ctx); err != nil {
		return fmt.Errorf("migrate %s database: %w", db.dialect(), err)
	}
	var applied []int
	err = db.migrate(ctx, func(q querier) error {
		applied, err = migrateLocked(ctx, q, db.dialect(), normEmail(o.PlatformAdminEmail))
		return err
	})
	if err != nil {
		return fmt.Errorf("migrate %s database: %w", db.dialect(), err)
	}
	o.Logger.Named("store").Info("database migrated", zap.String("dialect", db.dialect()),
		zap.Ints("applied_versions", applied), zap.Duration("took", time.Since(start)))
	return nil
}

// migrateLocked runs with the migration lock held, in one transaction.
func migrateLocked(ctx context.Context, q querier, dialect, adminEmail string) ([]int, error) {
	ts := "TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP"
	if dialect == DialectPostgres {
		ts = "TIMESTAMPTZ NOT NULL DEFAULT now()"
	}
	if _, err := q.exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at `+ts+`
	)`); err != nil {
		return nil, fmt.Errorf("create schema_migrations: %w", err)
	}
	done := map[int]bool{}
	r, err := q.query(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	for r.Next() {
		var v int
		if err := r.Scan(&v); err != nil {
			r.Close()
			return nil, fmt.Errorf("read schema_migrations: %w", err)
		}
		done[v] = true
	}
	err = r.Err()
	r.Close()
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}

	var applied []int
	for _, m := range migrations {
		if done[m.version] {
			continue
		}
		for _, s := range m.stmts(dialect) {
			if _, err := q.exec(ctx, s); err != nil {
				return nil, fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
			}
		}
		if _, err := q.exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
			m.version, m.name); err != nil {
			return nil, fmt.Errorf("record migration %d: %w", m.version, err)
		}
		applied = append(applied, m.version)
	}

	// The admin is not a versioned migration: PLATFORM_ADMIN_EMAIL may change
	// between runs. An existing row is left alone (an operator may have
	// deactivated it on purpose).
	n, err := q.exec(ctx, `INSERT INTO users (email, active, is_admin) VALUES ($1, TRUE, TRUE)
		ON CONFLICT (email) DO NOTHING`, adminEmail)
	if err != nil {
		return nil, fmt.Errorf("create platform admin %s: %w", adminEmail, err)
	}

	if err := purgeRevocations(ctx, q, time.Now().Unix()); err != nil {
		return nil, err
	}
	if err := purgeStreamEvents(ctx, q, time.Now().Unix()); err != nil {
		return nil, err
	}

	// Instances already running (a rolling deploy) must see new rows too.
	var changed []string
	if n > 0 {
		changed = append(changed, userKey(adminEmail))
	}
	if len(applied) > 0 {
		changed = append(changed, toolsKey)
	}
	if len(changed) > 0 {
		if _, err := bumpEpoch(ctx, q, changed...); err != nil {
			return nil, err
		}
	}
	return applied, nil
}
