package upstream

import (
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math/rand/v2"
)

// BlockSize is the unit of the stream, and a good size for the buffers of
// the copies that read and write it.
const BlockSize = 256 << 10

// MaxTransfer bounds what one /download may ask for.
const MaxTransfer = 1 << 40

// Seed is the seed of the stream Serve serves: a client that checks what
// it got makes its stream with it.
const Seed = 1

// Stream is the deterministic byte stream of /download and /upload: one
// block of ChaCha8 output, repeated, with the first 8 bytes of each block
// replaced by its index. No block repeats, so a lost, doubled or misplaced
// block changes the sha256, and writing the stream costs no more than
// writing a buffer: the bytes in flight are what is measured, not the
// generator.
type Stream struct {
	block []byte
}

// NewStream makes the stream of seed.
func NewStream(seed uint64) *Stream {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, BlockSize)
	rand.NewChaCha8(key).Read(b)
	return &Stream{block: b}
}

// WriteN writes the first n bytes of the stream to w.
func (s *Stream) WriteN(w io.Writer, n int64) (int64, error) {
	buf := make([]byte, BlockSize)
	copy(buf, s.block)
	var done int64
	for k := uint64(0); done < n; k++ {
		binary.BigEndian.PutUint64(buf, k)
		m, err := w.Write(buf[:min(n-done, BlockSize)])
		done += int64(m)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// Sum is the sha256 of the first n bytes of the stream.
func (s *Stream) Sum(n int64) [sha256.Size]byte {
	h := sha256.New()
	s.WriteN(h, n) // a hash never fails to write
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}
