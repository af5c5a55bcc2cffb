"""Pure geospatial engine: arrays and geometries in, arrays and geometries out; never I/O."""
