"""The IPYMINI_ environment settings, read at start: a bad value gets a warning on stderr and the default, never a crash."""
import logging, math, os

__all__ = ['env_flag', 'env_float']
log = logging.getLogger('ipymini')

FLAGS = {'1': True, 'true': True, 'yes': True, 'on': True, '0': False, 'false': False, 'no': False, 'off': False}

def env_flag(name, default=None):
    "Environment flag `name` as a bool ('0' or '1'); unset gives `default`, and so does a bad value, after a warning."
    v = os.environ.get(name, '').strip()
    if not v: return default
    if v.lower() in FLAGS: return FLAGS[v.lower()]
    log.warning("%s=%r is not 0 or 1: using the default", name, v)
    return default

def env_float(name, default=0., minimum=0.):
    "Environment setting `name` as a finite number >= `minimum`; unset gives `default`, and so does a bad value, after a warning."
    v = os.environ.get(name, '').strip()
    if not v: return default
    try: f = float(v)
    except ValueError: f = math.nan
    if f >= minimum and math.isfinite(f): return f
    log.warning("%s=%r is not a number >= %s: using %s", name, v, minimum, default)
    return default
