//go:build !linux

package listener

import (
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// copyChunk bounds one ReadFrom call, so the activity clock and counters stay fresh.
const copyChunk = 1 << 20

// copyDirection is the portable relay loop: ReadFrom in bounded chunks, telling r of
// every batch.
func copyDirection(dst, src *net.TCPConn, r *relay, toUpstream bool) (int64, error) {
	lr := io.LimitedReader{R: src}
	var total int64
	for {
		if err := src.SetReadDeadline(time.Now().Add(r.idle)); err != nil {
			return total, err
		}
		lr.N = copyChunk
		n, err := dst.ReadFrom(&lr)
		if n > 0 {
			total += n
			r.moved(toUpstream, n)
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if n > 0 || r.stillActive() {
					continue
				}
				return total, ErrIdle
			}
			return total, err
		}
		if lr.N > 0 {
			return total, nil
		}
	}
}
