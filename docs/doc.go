// Package docs holds wsedge's own documentation: architecture.md (the
// parts, the package map, the request walks, the rules) and protocol.md
// (the coderd wire facts the code relies on). It has no code; its test
// keeps every pointer into these pages true and fails when a file of the
// repository points outside it.
package docs
