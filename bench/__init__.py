"""`python -m bench`: the service over loopback under wrk, per engine and connection balance."""
