from healing_guard.common.v1 import common_pb2
from services.common import vocabulary


def test_domain_enums_mirror_the_contract_exactly():
    pairs = [(vocabulary.FailureClass, common_pb2.FailureClass), (vocabulary.ActionKind, common_pb2.ActionKind),
             (vocabulary.Provider, common_pb2.Provider)]
    for domain, contract in pairs:
        assert {m.name: m.value for m in domain} == dict(contract.items()), domain.__name__
