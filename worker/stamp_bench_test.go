package worker

import (
	"net"
	"testing"
)

// The cost of reading with recvmsg and a timestamp against a plain read,
// per 100-byte message over loopback TCP (the write included in both).
func BenchmarkRead(b *testing.B) {
	for _, stamped := range []bool{false, true} {
		name := "read"
		if stamped {
			name = "recvmsg+timestamp"
		}
		b.Run(name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			if stamped {
				if err := enableStamps(ln); err != nil {
					b.Fatal(err)
				}
			}
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			sc, err := ln.Accept()
			if err != nil {
				b.Fatal(err)
			}
			defer sc.Close()
			var r net.Conn = &trackedConn{Conn: sc}
			if stamped {
				r = &trackedConn{Conn: sc, stamps: newStampedReader(sc)}
			}
			msg, buf := make([]byte, 100), make([]byte, 4096)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := r.Read(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
