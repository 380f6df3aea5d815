//go:build !linux

package listener

import (
	"errors"
	"io"
	"os"
	"time"
)

// copyChunk bounds one ReadFrom call, so the activity clock and counters stay fresh.
const copyChunk = 1 << 20

// parkState is empty: without the Linux poller, a direction waits on its goroutine.
type parkState struct{}

func (d *direction) unpark() bool { return false }
func (d *direction) parked() bool { return false }

// copy is the portable relay loop: ReadFrom in bounded chunks, telling the relay of
// every batch. It never parks.
func (d *direction) copy() (parked bool) {
	r := d.r
	lr := io.LimitedReader{R: d.src}
	for {
		if err := d.src.SetReadDeadline(time.Now().Add(r.idle)); err != nil {
			d.err = err
			return false
		}
		lr.N = copyChunk
		n, err := d.dst.ReadFrom(&lr)
		if n > 0 {
			d.bytes += n
			r.moved(d.toUpstream, n)
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if n > 0 || r.stillActive() {
					continue
				}
				d.err = ErrIdle
				return false
			}
			d.err = err
			return false
		}
		if lr.N > 0 {
			return false
		}
	}
}
