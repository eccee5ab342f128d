#!/usr/bin/env python3
"""Validates host.json and every */function.json against the Azure Functions JSON Schemas.

The schemas are not ours to commit; pass the folder holding host.json and function.json schemas.
function.json's schema says draft-04 but uses "const", so it is checked with draft-07 rules.
"""
import json
import pathlib
import sys

import jsonschema

def main() -> int:
    if len(sys.argv) != 3:
        print("usage: validate-schemas.py SCHEMA_DIR APP_ROOT", file=sys.stderr)
        return 2
    schemas, root = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    host_schema = json.loads((schemas / "host.json").read_text())
    function_schema = json.loads((schemas / "function.json").read_text())
    targets = [(root / "host.json", host_schema)]
    targets += [(p, function_schema) for p in sorted(root.glob("*/function.json"))]
    if len(targets) < 5:
        print(f"expected host.json and 4 function.json files, found {len(targets)}", file=sys.stderr)
        return 1
    failed = 0
    for path, schema in targets:
        validator = jsonschema.Draft7Validator(schema)
        errors = sorted(validator.iter_errors(json.loads(path.read_text())), key=str)
        for error in errors:
            print(f"{path}: {error.message} at {list(error.absolute_path)}", file=sys.stderr)
        failed += bool(errors)
        print(f"{'FAIL' if errors else 'ok  '} {path.relative_to(root)}")
    return 1 if failed else 0

if __name__ == "__main__":
    sys.exit(main())
