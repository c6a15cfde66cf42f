// Pins the Gateway API release whose standard CRDs (config/crd/standard/) the cluster tests
// install (scripts/testenv.sh copies them from the module cache). A module of its own, so that
// the pin does not move the dependencies the control plane in ../go.mod is built from.
module l3.dev/testenv/gatewayapi

go 1.25.0

require sigs.k8s.io/gateway-api v1.4.1
