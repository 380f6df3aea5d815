package listener

import "skiff/park"

// Parking: a relay direction that has been quiet for a while gives up its goroutine and
// waits in the process's poller (package park) instead; a goroutine starts again when
// its source has bytes, an EOF or an error.

// parkState is a direction's place in the poller.
type parkState = park.State

// Wake runs a direction whose source became ready (park.Waiter).
func (d *direction) Wake() { spawn(d) }

// parkSrc parks d until its source has something. It reports whether d is no longer
// this goroutine's: parked, or taken by someone else already. When it reports false,
// d could not park and its goroutine goes on with it.
func (d *direction) parkSrc() bool {
	rc, err := d.src.SyscallConn()
	if err != nil {
		return false
	}
	// Armed before d is parked: once it is, this goroutine must not touch the relay.
	d.r.armIdle()
	return park.Park(d, &d.park, rc)
}

// unpark takes d out of the poller if it is parked there, and reports whether it was:
// the caller then has it.
func (d *direction) unpark() bool { return park.Unpark(&d.park) }

// parked reports whether d is parked.
func (d *direction) parked() bool { return park.Parked(&d.park) }
