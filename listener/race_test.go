//go:build race

package listener

// raceEnabled skips the allocation and memory assertions: the race detector drops
// sync.Pool items at random and enlarges stacks, so the counts it gives are not the
// ones a production build has.
const raceEnabled = true
