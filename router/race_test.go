//go:build race

package router

// raceEnabled skips the allocation assertions: the race detector drops sync.Pool items
// at random and instruments memory accesses, so the counts it gives are not the ones a
// production build has.
const raceEnabled = true
