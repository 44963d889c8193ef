package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Server is a virtual server: a named set of the catalogue's tools, served
// on its own MCP endpoint (/servers/{id}/mcp, rpc/servers.go). Tools are
// the gateway's names (everything-echo, convert_time); the rpc package
// decides the names its clients see.
type Server struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Tools       []string `json:"tools"`
}

// serversV6 is the table of virtual servers. The tools are a JSON array of
// the gateway's names, kept with the server: it is read whole, and a tool
// removed from the catalogue just drops out of the server's list when it
// is served (rpc/servers.go), so no join table has to be kept in step.
func serversV6(dialect string) []string {
	ts := timestampColumn(dialect)
	return []string{
		`CREATE TABLE virtual_servers (
			id          TEXT PRIMARY KEY,
			name        TEXT NOT NULL DEFAULT '',
			description TEXT NOT NULL DEFAULT '',
			tools       TEXT NOT NULL DEFAULT '[]',
			created_at  ` + ts + `,
			updated_at  ` + ts + `
		)`,
	}
}

// Servers lists the virtual servers sorted by id, straight from the
// database (rpc/servers.go caches what it serves for a short while).
func (s *Store) Servers(ctx context.Context) ([]Server, error) {
	return s.queryServers(ctx, "SELECT id, name, description, tools FROM virtual_servers ORDER BY id")
}

// Server returns one virtual server, or ErrNotFound.
func (s *Store) Server(ctx context.Context, id string) (Server, error) {
	list, err := s.queryServers(ctx, "SELECT id, name, description, tools FROM virtual_servers WHERE id = $1", id)
	if err != nil {
		return Server{}, err
	}
	if len(list) == 0 {
		return Server{}, ErrNotFound
	}
	return list[0], nil
}

func (s *Store) queryServers(ctx context.Context, query string, args ...any) ([]Server, error) {
	lctx, cancel := s.lookupContext(ctx)
	defer cancel()
	r, err := s.db.query(lctx, query, args...)
	if err = s.noteDB(err); err != nil {
		return nil, fmt.Errorf("list servers: %w", err)
	}
	defer r.Close()
	out := []Server{}
	for r.Next() {
		var v Server
		var tools string
		if err := r.Scan(&v.ID, &v.Name, &v.Description, &tools); err != nil {
			return nil, fmt.Errorf("list servers: %w", err)
		}
		if err := json.Unmarshal([]byte(tools), &v.Tools); err != nil {
			return nil, fmt.Errorf("server %s: tools: %w", v.ID, err)
		}
		out = append(out, v)
	}
	if err := s.noteDB(r.Err()); err != nil {
		return nil, fmt.Errorf("list servers: %w", err)
	}
	return out, nil
}

// PutServer creates or replaces a virtual server. The caller checks that
// its tools exist (the catalogue may change later anyway).
func (s *Store) PutServer(ctx context.Context, v Server) error {
	if strings.TrimSpace(v.ID) == "" {
		return errors.New("put server: id is required")
	}
	if v.Tools == nil {
		v.Tools = []string{}
	}
	tools, err := json.Marshal(v.Tools)
	if err != nil {
		return fmt.Errorf("put server %s: %w", v.ID, err)
	}
	ctx, cancel := s.writeContext(ctx)
	defer cancel()
	_, err = s.db.exec(ctx, `INSERT INTO virtual_servers (id, name, description, tools) VALUES ($1, $2, $3, $4)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description,
		tools = excluded.tools, updated_at = CURRENT_TIMESTAMP`, v.ID, v.Name, v.Description, string(tools))
	if err = s.noteDB(err); err != nil {
		return fmt.Errorf("put server %s: %w", v.ID, err)
	}
	return nil
}

// DeleteServer removes a virtual server; ErrNotFound when there was none.
func (s *Store) DeleteServer(ctx context.Context, id string) error {
	ctx, cancel := s.writeContext(ctx)
	defer cancel()
	n, err := s.db.exec(ctx, "DELETE FROM virtual_servers WHERE id = $1", id)
	if err = s.noteDB(err); err != nil {
		return fmt.Errorf("delete server %s: %w", id, err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}
