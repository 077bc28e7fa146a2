"""Typed service APIs: what an actor serves, written once, as a class of method signatures.

A service's API is one or more *facets*: subclasses of ``ServiceAPI`` that name the address
they are served on and declare their methods as keyword-only ``async def`` stubs, marked
``@call`` (request/reply) or ``@cast`` (no reply)::

    class Scheduler(ServiceAPI, address="scheduler"):
        '''What the conductor asks the scheduler.'''

        @call
        async def select_destinations(self, *, instance_uuid: Uuid, vcpus: Amount) -> Destination: ...

Everything else comes from that one declaration:

* **callers** make a typed client, ``scheduler = Scheduler.client(bus)``, and write
  ``await scheduler.select_destinations(instance_uuid=..., vcpus=1)``: a type checker checks
  the names and types of the arguments and of the reply, and "who calls this handler" is a
  search for ``.select_destinations(``;
* **the actor** serving it subclasses the facet and overrides each method with its handler
  (``class SchedulerActor(Actor, Scheduler)``), or hands the actor servant objects that do
  (``Actor.serve``); a handler whose parameters differ from the declaration is refused when
  the actor is made;
* **dispatch** checks a message's arguments against the annotations once, before the
  handler runs (``msgspec``: wrong, missing or unknown field -> ``InvalidRequest`` naming it),
  so handlers keep only the checks of meaning; ``Annotated[int, Meta(ge=0)]`` and the like
  carry bounds; with ``AIOSTACK_CHECK_REPLIES=1`` every reply is checked against the declared
  return type too (the test suite runs that way);
* **permissions**: ``subjects(facet)`` lists the subjects a facet's client may publish to,
  so a process's NATS permissions come from the facets it uses.

A facet's address may hold fields (``address="node.{host}"``), given when the client is made
(``Node.client(bus, host="node-1")``). Facets of one service share its address and may build
on each other (``class Images(ImageReader)``: the full API a user sees is the reader's
methods and more). Every facet has ``ping``, which every actor answers.

``Topic`` is the same for subjects that are not actor methods (heartbeats, revocations):
their subject and body type, declared once in the API module that owns them.
"""

from __future__ import annotations

import inspect
import string
import typing
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, Self, TypeVar, overload

import msgspec

from bus.bus import DEFAULT_CALL_TIMEOUT, Bus
from bus.envelope import decode
from bus.errors import InvalidRequest

F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, Any]])
T = TypeVar("T")

_MARK = "_aiostack_api_method"
ANY_ADDRESS = "*"
"""The target a ``liveness`` client's calls are timed under (it may ask any actor)."""
_WIRE_TYPES = (bytes, bytearray, memoryview)


@dataclass(frozen=True, slots=True)
class _Declared:
    kind: Literal["call", "cast"]
    policy: str | None
    timeout: float | None
    idempotent: bool = False


@overload
def call(fn: F, /) -> F: ...
@overload
def call(
    *, policy: str | None = None, timeout: float | None = None, idempotent: bool = False
) -> Callable[[F], F]: ...
def call(
    fn: F | None = None,
    /,
    *,
    policy: str | None = None,
    timeout: float | None = None,
    idempotent: bool = False,
) -> F | Callable[[F], F]:
    """Declare a request/reply method. ``policy`` names the operation of the policy table a calling
    user must be allowed; ``timeout`` is how long a client waits by default (the bus's 10 s otherwise);
    ``idempotent``: handling the same request twice does what handling it once does (a read, or a
    change the handler recognises when asked again), so clients send it again while it is
    unanswered (``Bus.call``'s ``resend``)."""

    def mark(method: F) -> F:
        setattr(method, _MARK, _Declared("call", policy, timeout, idempotent))
        return method

    return mark(fn) if fn is not None else mark


@overload
def cast(fn: F, /) -> F: ...
@overload
def cast(*, policy: str | None = None) -> Callable[[F], F]: ...
def cast(fn: F | None = None, /, *, policy: str | None = None) -> F | Callable[[F], F]:
    """Declare a fire-and-forget method: the client returns once the message is sent."""

    def mark(method: F) -> F:
        setattr(method, _MARK, _Declared("cast", policy, None))
        return method

    return mark(fn) if fn is not None else mark


@dataclass(slots=True)
class Method:
    """One method of a facet: its name, how it is sent, its policy and its types."""

    name: str
    kind: Literal["call", "cast"]
    policy: str | None
    timeout: float | None
    facet: type[ServiceAPI]
    function: Callable[..., Any]
    signature: inspect.Signature
    idempotent: bool = False
    _arguments: type[msgspec.Struct] | None = field(default=None, repr=False)
    _returns: Any = field(default=None, repr=False)
    _carries_bytes: bool = field(default=False, repr=False)
    _resolved: bool = field(default=False, repr=False)

    def _resolve(self) -> None:
        """Read the annotations (lazily: a facet may name types defined after it in its module)."""
        hints = typing.get_type_hints(self.function, include_extras=True)
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for parameter in list(self.signature.parameters.values())[1:]:
            annotation = hints.get(parameter.name, Any)
            if parameter.default is inspect.Parameter.empty:
                fields.append((parameter.name, annotation))
            else:
                fields.append((parameter.name, annotation, parameter.default))
        self._arguments = msgspec.defstruct(
            f"{self.facet.__name__}.{self.name}",
            fields,
            kw_only=True,
            forbid_unknown_fields=True,
        )
        self._returns = hints.get("return", Any)
        self._carries_bytes = any(_mentions_bytes(annotation) for _, annotation, *_ in fields)
        self._resolved = True

    @property
    def arguments(self) -> type[msgspec.Struct]:
        """The arguments as a msgspec struct (what dispatch checks a message's body against)."""
        if not self._resolved:
            self._resolve()
        assert self._arguments is not None
        return self._arguments

    @property
    def returns(self) -> Any:
        """The declared reply type."""
        if not self._resolved:
            self._resolve()
        return self._returns

    def parse(self, body: Any) -> dict[str, Any]:
        """A message body checked against the parameters, as keyword arguments.

        :raises InvalidRequest: the body is not a map, or a field is missing, unknown or of the wrong type.
        """
        if not self._resolved:
            self._resolve()
        if body is None:
            body = {}
        elif type(body) is not dict:
            raise InvalidRequest(f"{self.name}: the body must be a map of arguments")
        try:
            if self._carries_bytes:  # bytes are msgpack's own: a str is never taken for base64 of bytes
                arguments = msgspec.convert(body, self._arguments, builtin_types=_WIRE_TYPES)
            else:
                arguments = msgspec.convert(body, self._arguments)
        except msgspec.ValidationError as exc:
            raise InvalidRequest(f"{self.name}: {exc}") from None
        return msgspec.structs.asdict(arguments)

    def check_reply(self, reply: Any) -> None:
        """:raises TypeError: ``reply`` does not match the declared return type."""
        try:
            msgspec.convert(reply, self.returns, builtin_types=_WIRE_TYPES)
        except msgspec.ValidationError as exc:
            raise TypeError(
                f"reply of {self.facet.__name__}.{self.name} is not {self.returns}: {exc}"
            ) from None


class ServiceAPI:
    """Base of every facet (see the module's docstring). ``ping`` is on every one of them."""

    address: ClassVar[str] = ""
    """Where the facet is served, relative to ``<prefix>.rpc.``; may hold ``{fields}``."""
    caller: ClassVar[str | None] = None
    """The field of the address that names the *caller* (``address="conductor.host.{host}",
    caller="host"``): the actor serving the facet serves every value of it, and its handlers get
    it as a keyword argument read from the subject, which only that caller may publish to (its
    NATS permissions), never from the body."""
    api_methods: ClassVar[dict[str, Method]] = {}
    """Every method of the facet, its parents' included."""

    def __init_subclass__(
        cls, *, address: str | None = None, caller: str | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if caller is not None:
            if address is None or not address.endswith(f".{{{caller}}}"):
                raise TypeError(f"{cls.__name__}: caller {caller!r} must be the last field of its address")
            cls.caller = caller
        own = {name: value for name, value in vars(cls).items() if getattr(value, _MARK, None) is not None}
        if address is not None:
            inherited = {
                (base.address, base.caller) for base in cls.__mro__[1:] if issubclass(base, ServiceAPI)
            }
            inherited.discard(("", None))
            if inherited and inherited != {(address, cls.caller)}:
                raise TypeError(f"{cls.__name__}: a facet extends only facets of its own address and caller")
            cls.address = address
        elif own and not cls.address:
            raise TypeError(f"{cls.__name__} declares methods but names no address")
        if not own and address is None:
            return
        methods: dict[str, Method] = {}
        for base in reversed(cls.__mro__[1:]):
            if isinstance(base, type) and issubclass(base, ServiceAPI):
                methods.update(base.api_methods)
        for name, function in own.items():
            declared: _Declared = getattr(function, _MARK)
            _check_declaration(cls, name, function, declared)
            methods[name] = Method(
                name,
                declared.kind,
                declared.policy,
                declared.timeout,
                cls,
                function,
                inspect.signature(function),
                declared.idempotent,
            )
        cls.api_methods = methods

    @classmethod
    def facets(cls) -> list[type[ServiceAPI]]:
        """The facets this class is or implements (each with methods of its own), nearest first."""
        return [
            klass
            for klass in cls.__mro__
            if isinstance(klass, type)
            and issubclass(klass, ServiceAPI)
            and klass is not ServiceAPI
            and any(getattr(value, _MARK, None) is not None for value in vars(klass).values())
        ]

    @classmethod
    def address_for(cls, **fields: str) -> str:
        """The facet's address with its fields filled in (``node.{host}`` -> ``node.node-1``)."""
        try:
            address = cls.address.format(**fields)
        except KeyError as exc:
            raise TypeError(f"{cls.__name__}.address {cls.address!r} needs {exc}") from None
        for value in fields.values():
            if not value or any(c in value for c in " .*>\t\n"):
                raise ValueError(f"{value!r} cannot be one token of a subject")
        return address

    @classmethod
    def client(
        cls, bus: Bus, *, timeout: float | None = None, patience: float | None = None, **fields: str
    ) -> Self:
        """A client of this facet on ``bus``: each method a call (or cast) to the actor serving it.

        ``timeout`` overrides each method's own; with ``patience`` every call is asked again
        while its actor is away, restarting or busy, for up to that many seconds
        (``Bus.call_patiently``: only for idempotent methods). ``fields`` fill the address.
        """
        instance: Any = object.__new__(_client_class(cls))
        instance._bus = bus
        instance._address = cls.address_for(**fields)
        instance._timeout = timeout
        instance._patience = patience
        return typing.cast(Self, instance)

    @call
    async def ping(self) -> Pong:
        """Liveness: who answered, since when, and how busy it is."""
        ...


def liveness(bus: Bus, address: str, *, timeout: float | None = None) -> ServiceAPI:
    """A client of any actor's ``ping``, by its address (``scheduler``, ``node.node-1``)."""
    if not address or any(not token or any(c in token for c in " *>\t\n") for token in address.split(".")):
        raise ValueError(f"{address!r} is not an actor's address")
    instance: Any = object.__new__(_client_class(ServiceAPI))
    instance._bus, instance._address, instance._timeout, instance._patience = bus, address, timeout, None
    return typing.cast(ServiceAPI, instance)


class Pong(typing.TypedDict):
    actor: str
    address: str
    instance: str
    pid: int
    uptime: float
    inflight: int
    backlog: int


ServiceAPI.api_methods = {
    "ping": Method(
        "ping",
        "call",
        None,
        None,
        ServiceAPI,
        ServiceAPI.ping,
        inspect.signature(ServiceAPI.ping),
        idempotent=True,
    )
}


def _mentions_bytes(annotation: Any, seen: set[int] | None = None) -> bool:
    """Whether a type is, or holds somewhere inside it, ``bytes`` (or bytearray, memoryview)."""
    seen = set() if seen is None else seen
    if id(annotation) in seen:
        return False
    seen.add(id(annotation))
    if annotation in _WIRE_TYPES:
        return True
    inner = list(typing.get_args(annotation))
    is_struct = isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)
    if is_struct or typing.is_typeddict(annotation):
        inner += typing.get_type_hints(annotation).values()
    return any(_mentions_bytes(part, seen) for part in inner)


def _check_declaration(cls: type, name: str, function: Any, declared: _Declared) -> None:
    if not inspect.iscoroutinefunction(function):
        raise TypeError(f"{cls.__name__}.{name} must be async def")
    parameters = list(inspect.signature(function).parameters.values())
    for parameter in parameters[1:]:
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"{cls.__name__}.{name}: parameter {parameter.name} must be keyword-only")


def _same_parameters(declared: inspect.Signature, implemented: inspect.Signature, caller: str | None) -> bool:
    """Names, kinds and defaults the same (annotations may be plainer in the implementation); a
    facet with a caller field adds it, keyword-only with no default, to its handlers."""
    left = [(p.name, p.kind, p.default) for p in declared.parameters.values()]
    if caller is not None:
        left.append((caller, inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.empty))
    right = [(p.name, p.kind, p.default) for p in implemented.parameters.values()]
    return sorted(left[1:]) == sorted(right[1:]) and left[0] == right[0]


def handlers_of(servant: object) -> dict[str, tuple[Method, Callable[..., Awaitable[Any]]]]:
    """Every method ``servant`` implements, by name, with the facet's declaration.

    :raises TypeError: a method of one of its facets is not overridden, or its parameters
        differ from the declaration.
    """
    found: dict[str, tuple[Method, Callable[..., Awaitable[Any]]]] = {}
    if not isinstance(servant, ServiceAPI):
        return found
    servant_class = type(servant)
    for facet in servant_class.facets():
        for name, method in facet.api_methods.items():
            if name == "ping" or name in found:
                continue
            implementation = getattr(servant_class, name)
            if implementation is method.function:
                raise TypeError(f"{servant_class.__name__} does not implement {facet.__name__}.{name}")
            if not inspect.iscoroutinefunction(implementation):
                raise TypeError(f"{servant_class.__name__}.{name} must be async def")
            if not _same_parameters(method.signature, inspect.signature(implementation), facet.caller):
                raise TypeError(
                    f"{servant_class.__name__}.{name}{inspect.signature(implementation)} differs from "
                    f"{facet.__name__}.{name}{method.signature}"
                )
            found[name] = (method, getattr(servant, name))
    return found


_CLIENT_CLASSES: dict[type[ServiceAPI], type[Any]] = {}


def _client_class(facet: type[ServiceAPI]) -> type[Any]:
    """The client class of a facet: a subclass whose methods send messages (made once per facet)."""
    made = _CLIENT_CLASSES.get(facet)
    if made is None:
        namespace: dict[str, Any] = {name: _sender(method) for name, method in facet.api_methods.items()}
        namespace["__slots__"] = ("_bus", "_address", "_timeout", "_patience")
        namespace["__repr__"] = lambda self: f"<{facet.__name__} client of {self._address}>"
        namespace["options"] = _options
        made = type(f"{facet.__name__}Client", (facet,), namespace)
        _CLIENT_CLASSES[facet] = made
    return made


def _options(self: Any, *, timeout: float | None = None, patience: float | None = None) -> Any:
    """The same client with other call options (see ``ServiceAPI.client``)."""
    copy: Any = object.__new__(type(self))
    copy._bus, copy._address = self._bus, self._address
    copy._timeout = timeout if timeout is not None else self._timeout
    copy._patience = patience if patience is not None else self._patience
    return copy


def _sender(method: Method) -> Callable[..., Awaitable[Any]]:
    """A client's method: it hands back the bus's own awaitable (no coroutine of its own per call)."""
    name = method.name
    declared_timeout = method.timeout
    idempotent = method.idempotent

    def send_cast(self: Any, **arguments: Any) -> Awaitable[None]:
        bus: Bus = self._bus
        return bus.cast(f"{self._address}.{name}", arguments)

    def send_call(self: Any, **arguments: Any) -> Awaitable[Any]:
        bus: Bus = self._bus
        timeout = self._timeout or declared_timeout or DEFAULT_CALL_TIMEOUT
        target = type(self).address or ANY_ADDRESS
        if self._patience is not None:
            return bus.call_patiently(
                f"{self._address}.{name}",
                arguments,
                within=self._patience,
                attempt_timeout=timeout,
                resend=idempotent,
                target=target,
            )
        return bus.call(
            f"{self._address}.{name}", arguments, timeout=timeout, resend=idempotent, target=target
        )

    send = send_cast if method.kind == "cast" else send_call
    send.__name__ = send.__qualname__ = name
    send.__doc__ = method.function.__doc__
    return send


def subjects(facet: type[ServiceAPI], **fields: str) -> list[str]:
    """The subjects (under ``<prefix>.rpc.``) a client of ``facet`` sends to: the address's fields
    given are filled in, the others are wildcards (``node.*.build_and_run_instance``)."""
    address = _wildcard(facet.address, fields)
    return [f"{address}.{name}" for name in sorted(facet.api_methods)]


def served_pattern(facet: type[ServiceAPI], **fields: str) -> str:
    """The address an actor serving ``facet`` subscribes under (``<address>.*``, under
    ``<prefix>.rpc.``): its fields as given (a node's host), its caller field a wildcard."""
    return _wildcard(facet.address, {name: value for name, value in fields.items() if name != facet.caller})


def _wildcard(template: str, fields: Mapping[str, str] | None = None) -> str:
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    return template.format(**{name: (fields or {}).get(name, "*") for name in names})


class Topic(Generic[T]):
    """A subject that is not an actor method (a heartbeat, a revocation), with its body type.

    ``template`` is relative to the prefix and may hold ``{fields}``; a subscriber reads the
    fields back from the subject (so a host named by the subject, where only that host may
    publish, is never taken from the body).
    """

    def __init__(self, template: str, body: type[T]) -> None:
        self.template = template
        self.body = body
        self._names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
        self._static = len(template.split(".")) - len(self._names)

    def subject(self, **fields: str) -> str:
        return self.template.format(**fields)

    @property
    def pattern(self) -> str:
        """Every subject of the topic: its fields as wildcards."""
        return _wildcard(self.template)

    def fields_of(self, bus: Bus, absolute_subject: str) -> dict[str, str]:
        """The fields a received message's subject carries."""
        tokens = absolute_subject[len(bus.prefix) + 1 :].split(".")
        template = self.template.split(".")
        return {
            part[1:-1]: token for part, token in zip(template, tokens, strict=True) if part.startswith("{")
        }

    def parse(self, data: bytes, max_bytes: int) -> tuple[str, T]:
        """The request id and the body of a message on this topic.

        :raises BadMessage: not an envelope.
        :raises InvalidRequest: a body of the wrong shape.
        """
        envelope = decode(data, max_bytes)
        try:
            return envelope.request_id, msgspec.convert(envelope.body, self.body)
        except msgspec.ValidationError as exc:
            raise InvalidRequest(f"{self.pattern}: {exc}") from None

    async def publish(self, bus: Bus, body: T, **fields: str) -> None:
        await bus.publish(self.subject(**fields), body)

    async def request(
        self, bus: Bus, body: T, *, timeout: float = DEFAULT_CALL_TIMEOUT, **fields: str
    ) -> Any:
        return await bus.request(self.subject(**fields), body, timeout=timeout)

    async def gather(self, bus: Bus, body: T, *, within: float, quiet: float, **fields: str) -> list[Any]:
        """Every subscriber's answer (``Bus.gather``)."""
        return await bus.gather(self.subject(**fields), body, within=within, quiet=quiet)
