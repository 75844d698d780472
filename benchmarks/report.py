"""How every benchmark prints its result: JSON with --json, else one aligned `key: value` line each."""

import json


def print_result(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:>{width}}: {value}")
