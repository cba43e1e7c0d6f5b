"""``ConfiguredComponent``: the constructor shared by every generator."""

from __future__ import annotations

from amaranth.lib import wiring

__all__ = ["ConfiguredComponent"]


class ConfiguredComponent(wiring.Component):
    """A ``wiring.Component`` built from one frozen configuration dataclass.

    Subclasses set ``config_type`` and implement ``signature_of(config)``
    (a dict of members or a ``wiring.Signature``); the constructor refuses any
    other configuration type with a ``TypeError`` naming the component.
    """

    config_type: type = object

    def __init__(self, config):
        if not isinstance(config, self.config_type):
            raise TypeError(f"{type(self).__name__} needs a {self.config_type.__name__}, not {config!r}")
        self._config = config
        super().__init__(self.signature_of(config))

    @classmethod
    def signature_of(cls, config):
        raise NotImplementedError(f"{cls.__name__} must define signature_of(config)")

    @property
    def config(self):
        """The configuration this component was built from."""
        return self._config
