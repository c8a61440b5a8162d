"""Tools for developers: building the filter's dictionary, and a throwaway PostgreSQL server for the
tests and benchmarks."""
