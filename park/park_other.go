//go:build !linux

package park

import "syscall"

// Waiter is what parks; without the Linux poller nothing does, and waiters wait on
// their own goroutines.
type Waiter interface{ Wake() }

// State is empty: nothing parks.
type State struct{}

func (s *State) Failed() bool                   { return true }
func Start()                                    {}
func Park(Waiter, *State, syscall.RawConn) bool { return false }
func Unpark(*State) bool                        { return false }
func Parked(*State) bool                        { return false }
