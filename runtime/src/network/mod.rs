//! Container networking: none, host and bridge (veth + IPAM + NAT + published ports).
