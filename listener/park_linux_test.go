package listener

// The poller's goroutine is there before any test counts goroutines.
func init() { idlePoller() }
