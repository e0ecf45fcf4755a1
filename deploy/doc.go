// Package deploy holds what it takes to run wsedge outside a laptop: the
// container image (Dockerfile, and Containerfile.local for the offline build
// of `make image`), a docker compose file and Kubernetes manifests
// (kustomize base and an example overlay), each with the Envoy bootstrap it
// mounts. The package has no code of its own; its tests keep those files
// honest: every manifest decodes strictly into the Kubernetes API types, every
// container runs as non-root with probes on the ports it serves, every wsedge
// flag a manifest sets exists, and every checked-in Envoy bootstrap is what
// `wsedge envoy-config` generates from the command on its first line and is
// accepted by the real Envoy.
//
// After changing the command line of a checked-in Envoy bootstrap, regenerate
// it with
//
//	go test ./deploy -run TestEnvoyConfigs -update
//
// which `go generate ./...` (make generate) also runs, so that a change to
// package envoy refreshes these bootstraps along with envoy/examples.
package deploy

//go:generate go test -run ^TestEnvoyConfigs$ -update .
