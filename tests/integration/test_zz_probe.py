import time
from pkcs11 import Attribute, KeyType
from pkcs11.util.ec import encode_named_curve_parameters

pytest_plugins = ["hsm_fixtures"]

def test_probe(hsm, tokens):
    t = tokens["source"]
    with hsm.open(t.slot_id, t.pin) as session:
        s = session.session
        for i in range(2000):
            s.generate_key(KeyType.AES, 256, label=f"k{i}", store=True, template={Attribute.EXTRACTABLE: True})
        for i in range(100):
            s.generate_keypair(KeyType.RSA, 1024, label=f"r{i}", store=True, private_template={Attribute.EXTRACTABLE: True})
        params = s.create_domain_parameters(KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True)
        for i in range(100):
            params.generate_keypair(label=f"e{i}", store=True, private_template={Attribute.EXTRACTABLE: True})
        raw = hsm.raw()
        calls = {"get": 0, "sized": 0}
        orig, orig_sized = raw._get, raw._read_sized
        def g(*a):
            calls["get"] += 1
            return orig(*a)
        def sz(*a):
            calls["sized"] += 1
            return orig_sized(*a)
        raw._get = g; raw._read_sized = sz
        best = 9
        for _ in range(5):
            t0 = time.perf_counter()
            n = len(session._objects_direct())
            best = min(best, time.perf_counter() - t0)
        print("objects", n, {k: v // 5 for k, v in calls.items()}, "best", round(best, 3))
