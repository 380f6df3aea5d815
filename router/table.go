package router

// Table is the compiled services and routes of a snapshot.
type Table struct{}
