//go:build tools

// Build-only module: pins the CNCF distribution registry that hack/build-tools.sh compiles into
// .cache/bin/registry for the oci:// fetcher tests. Kept apart from hack/tools so its dependencies never
// move the Kubernetes pins (and the other way round). Not imported by any code.
package tools

import _ "github.com/distribution/distribution/v3/cmd/registry"
