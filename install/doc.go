// Package install holds weft's installation artifacts: the Helm chart in
// helm/weft (CRDs in its crds/ folder); install/image builds the images.
// This package has no code but the chart's tests: a golden test of `helm
// template` for the default values, the operator disabled and the CNI
// disabled (go test ./install -update rewrites testdata/), the schema's
// refusals, `helm lint`, and the rule that every hostPath volume says why
// it is there. It must not import any weft package.
package install
