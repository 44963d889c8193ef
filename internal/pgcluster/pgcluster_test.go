package pgcluster

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestStopAndStart(t *testing.T) {
	c := Start(t)
	ping := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, c.URL())
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		return conn.Ping(ctx)
	}
	if err := ping(); err != nil {
		t.Fatalf("after Start: %v", err)
	}
	if err := c.StopServer("fast"); err != nil {
		t.Fatal(err)
	}
	if err := ping(); err == nil {
		t.Fatal("the stopped server answered")
	}
	if err := c.StartServer(); err != nil {
		t.Fatal(err)
	}
	if err := ping(); err != nil {
		t.Fatalf("after StartServer: %v", err)
	}
}
