"""A small name -> builder registry, in the style of timm's `register_model`.

Each encoder, fusion and head module registers itself with a decorator; the
package `__init__` of each family imports its modules, so adding one is one
new file plus one import line.
"""

import fnmatch


class Registry:
    """Maps names to builders plus metadata (modality, weights file, ...).

    Args:
        kind: what the registry holds ("encoder", "fusion", "head"); used in
            error messages.

    Examples:
        >>> heads = Registry("head")
        >>> @heads.register("softmax")
        ... class Softmax: ...
        >>> heads.get("softmax")
    """

    def __init__(self, kind):
        self.kind = kind
        self._entries = {}
        self._meta = {}

    def register(self, name, **meta):
        def decorator(obj):
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice.")
            self._entries[name] = obj
            self._meta[name] = dict(meta, name=name)
            return obj

        return decorator

    def get(self, name, **filters):
        """Returns the builder registered as `name` (with matching metadata)."""
        valid = self.list(**filters)
        if not isinstance(name, str) or name not in valid:
            where = "".join(f" for {k}={v!r}" for k, v in filters.items())
            raise ValueError(
                f"Unknown {self.kind} {name!r}{where}. "
                f"Valid names: {', '.join(valid)}."
            )
        return self._entries[name]

    def meta(self, name):
        self.get(name)
        return dict(self._meta[name])

    def unregister(self, name):
        """Removes `name` (a test's own entry, or one a plugin replaces); KeyError when it is not registered."""
        del self._entries[name], self._meta[name]

    def in_order(self):
        """The names in the order they were registered."""
        return list(self._entries)

    def list(self, pattern="*", **filters):
        """Sorted names matching a wildcard `pattern` and metadata filters."""
        return sorted(
            name
            for name, meta in self._meta.items()
            if fnmatch.fnmatch(name, pattern)
            and all(meta.get(k) == v for k, v in filters.items() if v is not None)
        )
