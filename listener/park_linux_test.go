package listener

import "skiff/park"

// The poller's goroutine is there before any test counts goroutines.
func init() { park.Start() }
