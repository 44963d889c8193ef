package store

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
)

var dialects = []string{DialectSQLite, DialectPostgres}

// migratedVersions reads schema_migrations through a store's pool.
func migratedVersions(t *testing.T, s *Store) []int {
	t.Helper()
	r, err := s.db.query(context.Background(), "SELECT version FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var vs []int
	for r.Next() {
		var v int
		if err := r.Scan(&v); err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	return vs
}

func checkSeeded(t *testing.T, s *Store, admin string) {
	t.Helper()
	ctx := context.Background()
	if got := migratedVersions(t, s); len(got) != len(migrations) {
		t.Errorf("schema_migrations = %v; want %d versions, each once", got, len(migrations))
	}
	tools, err := s.Tools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(tools) != 2 || tools[0].Name != "convert_time" || tools[1].Name != "get_system_time" {
		t.Fatalf("seeded tools = %+v", tools)
	}
	for _, tool := range tools {
		var schema struct {
			Type       string                     `json:"type"`
			Properties map[string]json.RawMessage `json:"properties"`
			Required   []string                   `json:"required"`
		}
		if err := json.Unmarshal(tool.InputSchema, &schema); err != nil {
			t.Errorf("%s inputSchema is not JSON: %v", tool.Name, err)
		}
		if schema.Type != "object" || !tool.Enabled || tool.Description == "" {
			t.Errorf("%s: %+v / %+v", tool.Name, tool, schema)
		}
		switch tool.Name {
		case "convert_time":
			if len(schema.Properties) != 3 || len(schema.Required) != 3 {
				t.Errorf("convert_time schema: %s", tool.InputSchema)
			}
		case "get_system_time":
			var tz struct {
				Default string `json:"default"`
			}
			_ = json.Unmarshal(schema.Properties["timezone"], &tz)
			if tz.Default != "UTC" || len(schema.Required) != 0 {
				t.Errorf("get_system_time schema: %s", tool.InputSchema)
			}
		}
	}
	u, err := s.User(ctx, admin)
	if err != nil || !u.Active || !u.Admin {
		t.Errorf("platform admin %s = %+v, %v; want active admin", admin, u, err)
	}
}

func TestMigrateIdempotent(t *testing.T) {
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			o := testOptions(t, dbURL(t, d), CacheNone)
			o.PlatformAdminEmail = "Root@Example.COM"
			for i := 0; i < 3; i++ {
				if err := Migrate(context.Background(), o); err != nil {
					t.Fatalf("Migrate #%d: %v", i+1, err)
				}
			}
			s := openStore(t, o)
			checkSeeded(t, s, "root@example.com")
			if d == DialectSQLite {
				var mode string
				if err := queryOne(context.Background(), s.db, "PRAGMA journal_mode", nil, &mode); err != nil || mode != "wal" {
					t.Errorf("journal_mode = %q, %v; want wal", mode, err)
				}
			}

			// A later run must not undo an operator's change to the admin.
			if err := s.PutUser(context.Background(), User{Email: "root@example.com", Active: false, Admin: true}); err != nil {
				t.Fatal(err)
			}
			if err := Migrate(context.Background(), o); err != nil {
				t.Fatal(err)
			}
			if u, _ := s.User(context.Background(), "root@example.com"); u.Active {
				t.Errorf("Migrate re-activated a deactivated admin")
			}
		})
	}
}

// Two instances starting at once both run Migrate on an empty database.
func TestMigrateConcurrent(t *testing.T) {
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			o := testOptions(t, dbURL(t, d), CacheNone)
			const n = 4
			errs := make([]error, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					errs[i] = Migrate(context.Background(), o)
				}()
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("Migrate #%d: %v", i, err)
				}
			}
			checkSeeded(t, openStore(t, o), "admin@example.com")
		})
	}
}
