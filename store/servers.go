package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Server is a virtual server: a named set of the catalogue's tools, the
// upstreams' resources and prompts, and whole upstreams, served on its own
// MCP endpoint (/servers/{id}/mcp, rpc/servers.go). Tools are the
// gateway's names (everything-echo, convert_time); Resources are URIs or
// URI templates as the upstreams list them; Prompts are the gateway's
// names (everything-simple-prompt); Gateways are upstream names, each
// standing for everything that upstream offers (its tools, resources,
// templates and prompts). The rpc package decides the names its clients
// see. The lists are never nil once read.
type Server struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Tools       []string `json:"tools"`
	Resources   []string `json:"resources"`
	Prompts     []string `json:"prompts"`
	Gateways    []string `json:"gateways"`
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

// serversV8 adds a virtual server's resources, prompts and whole upstreams
// (JSON arrays as tools are); existing servers get none of them.
func serversV8(string) []string {
	return []string{
		`ALTER TABLE virtual_servers ADD COLUMN resources TEXT NOT NULL DEFAULT '[]'`,
		`ALTER TABLE virtual_servers ADD COLUMN prompts TEXT NOT NULL DEFAULT '[]'`,
		`ALTER TABLE virtual_servers ADD COLUMN gateways TEXT NOT NULL DEFAULT '[]'`,
	}
}

// serverColumns are the columns queryServers scans.
const serverColumns = "SELECT id, name, description, tools, resources, prompts, gateways FROM virtual_servers"

// Servers lists the virtual servers sorted by id, straight from the
// database (rpc/servers.go caches what it serves for a short while).
func (s *Store) Servers(ctx context.Context) ([]Server, error) {
	return s.queryServers(ctx, serverColumns+" ORDER BY id")
}

// Server returns one virtual server, or ErrNotFound.
func (s *Store) Server(ctx context.Context, id string) (Server, error) {
	list, err := s.queryServers(ctx, serverColumns+" WHERE id = $1", id)
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
		var lists [4]string
		if err := r.Scan(&v.ID, &v.Name, &v.Description, &lists[0], &lists[1], &lists[2], &lists[3]); err != nil {
			return nil, fmt.Errorf("list servers: %w", err)
		}
		for i, dst := range v.lists() {
			if err := json.Unmarshal([]byte(lists[i]), dst); err != nil {
				return nil, fmt.Errorf("server %s: %s: %w", v.ID, serverLists[i], err)
			}
			if *dst == nil {
				*dst = []string{}
			}
		}
		out = append(out, v)
	}
	if err := s.noteDB(r.Err()); err != nil {
		return nil, fmt.Errorf("list servers: %w", err)
	}
	return out, nil
}

// PutServer creates or replaces a virtual server. The caller checks that
// what it names exists (the catalogue and the upstreams may change later
// anyway). Nil lists are stored, and left in v, as empty ones.
func (s *Store) PutServer(ctx context.Context, v Server) error {
	if strings.TrimSpace(v.ID) == "" {
		return errors.New("put server: id is required")
	}
	var lists [4]string
	for i, src := range v.lists() {
		if *src == nil {
			*src = []string{}
		}
		b, err := json.Marshal(*src)
		if err != nil {
			return fmt.Errorf("put server %s: %w", v.ID, err)
		}
		lists[i] = string(b)
	}
	ctx, cancel := s.writeContext(ctx)
	defer cancel()
	_, err := s.db.exec(ctx, `INSERT INTO virtual_servers (id, name, description, tools, resources, prompts, gateways)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description,
		tools = excluded.tools, resources = excluded.resources, prompts = excluded.prompts,
		gateways = excluded.gateways, updated_at = CURRENT_TIMESTAMP`,
		v.ID, v.Name, v.Description, lists[0], lists[1], lists[2], lists[3])
	if err = s.noteDB(err); err != nil {
		return fmt.Errorf("put server %s: %w", v.ID, err)
	}
	return nil
}

// serverLists names the lists of lists(), in their columns' order.
var serverLists = [4]string{"tools", "resources", "prompts", "gateways"}

// lists are the server's lists, in the order of serverLists.
func (v *Server) lists() [4]*[]string {
	return [4]*[]string{&v.Tools, &v.Resources, &v.Prompts, &v.Gateways}
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
