#!/usr/bin/env python3
# Prints the field reference tables in docs/writing-policies.md and docs/teams-and-on-call.md
# from the CRD schema descriptions (which come from the doc comments in src/crd/).
#   python3 docs/tools/crd-fields.py crds/escalationpolicies.signoff.dev.yaml
import yaml, sys
def walk(schema, path, out):
    props = schema.get('properties') or {}
    for name, sub in props.items():
        p = f"{path}.{name}" if path else name
        t = sub.get('type', '')
        if t == 'array':
            it = sub.get('items', {})
            t = f"[]{it.get('type','')}"
            if 'enum' in it: t += " (" + "\\|".join(map(str, it['enum'])) + ")"
        if 'enum' in sub: t += " (" + "\\|".join(map(str, sub['enum'])) + ")"
        if sub.get('x-kubernetes-int-or-string'): t = 'int-or-string'
        d = ' '.join((sub.get('description') or '').split()).replace('|', '\\|')
        out.append(f"| `{p}` | {t} | {d} |")
        if sub.get('type') == 'object' and p.count('.') < 3 and 'Selector' not in name:
            walk(sub, p, out)
        if sub.get('type') == 'array':
            it = sub.get('items', {})
            if it.get('type') == 'object' and p.count('.') < 3:
                walk(it, p + '[]', out)
for f in sys.argv[1:]:
    crd = yaml.safe_load(open(f))
    kind = crd['spec']['names']['kind']
    s = crd['spec']['versions'][0]['schema']['openAPIV3Schema']['properties']['spec']
    out = []
    walk(s, 'spec', out)
    print(f"### {kind}\n\n| field | type | description |\n|---|---|---|")
    print('\n'.join(out)); print()
