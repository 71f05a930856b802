"""The contract on the wire: topology file, compiled broker objects, envelope, routes, apply."""

from topology.compiler import compile_topology
from topology.envelope import AmqpProperties, Envelope, PayloadRef, decode, new_job_id
from topology.errors import (
    BrokerError,
    BrokerUnavailableError,
    ContractError,
    ManagementApiError,
    SettingsError,
    TaskqError,
    TopologyConflictError,
    TopologyError,
    TopologyFileError,
)
from topology.loader import load_topology, parse_topology, topology_path
from topology.model import Binding, CompiledGroup, CompiledTopology, DelayTier, Exchange, Queue
from topology.routes import Route, delay_route, job_route
from topology.settings import BrokerSettings, load_settings
from topology.spec import GroupSpec, Priority, RetryPolicy, TopologySpec

__all__ = [
    "AmqpProperties",
    "Binding",
    "BrokerError",
    "BrokerSettings",
    "BrokerUnavailableError",
    "CompiledGroup",
    "CompiledTopology",
    "ContractError",
    "DelayTier",
    "Envelope",
    "Exchange",
    "GroupSpec",
    "ManagementApiError",
    "PayloadRef",
    "Priority",
    "Queue",
    "RetryPolicy",
    "Route",
    "SettingsError",
    "TaskqError",
    "TopologyConflictError",
    "TopologyError",
    "TopologyFileError",
    "TopologySpec",
    "compile_topology",
    "decode",
    "delay_route",
    "job_route",
    "load_settings",
    "load_topology",
    "new_job_id",
    "parse_topology",
    "topology_path",
]
