package splice_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/sockrelay/sockrelay/internal/splice"
)

// Pipe on connections without CloseWrite closes both once a direction
// ends, and counts the bytes.
func TestPipeWithoutCloseWrite(t *testing.T) {
	a1, a2 := net.Pipe()
	b1, b2 := net.Pipe()
	done := make(chan [2]int64, 1)
	go func() {
		ab, ba := splice.Pipe(a2, b1)
		done <- [2]int64{ab, ba}
	}()
	go func() {
		// b2 is the far end: echo one message.
		buf := make([]byte, 5)
		io.ReadFull(b2, buf)
		b2.Write(buf)
	}()
	a1.Write([]byte("hello"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(a1, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("through Pipe: got %q, %v, want %q, nil", buf, err, "hello")
	}
	a1.Close()
	select {
	case n := <-done:
		if n != [2]int64{5, 5} {
			t.Errorf("Pipe bytes each way: got %v, want [5 5]", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Pipe did not return after one side closed")
	}
	if _, err := b2.Write([]byte("x")); err == nil {
		t.Errorf("write to the far end after Pipe: got nil error, want the pipe closed")
	}
}
