import { HubError } from './errors.js';

/**
 * MQTT-style topic filters on `/`-separated levels: `+` matches exactly one level, `#` matches
 * the rest (including the parent level itself) and may only stand last. [MQTT-4.7.1]
 */
export function isValidPattern(pattern: string): boolean {
  if (pattern.length === 0) return false;
  const levels = pattern.split('/');
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i];
    if (l === '#') {
      if (i !== levels.length - 1) return false;
    } else if (l.includes('#') || (l.includes('+') && l !== '+')) {
      return false;
    }
  }
  return true;
}

/** A publish topic names one place: no wildcards, no empty string. [MQTT-4.7.3-1] */
export function assertPublishTopic(topic: string): void {
  if (typeof topic !== 'string' || topic.length === 0 || topic.includes('+') || topic.includes('#')) {
    throw new HubError('BUS_ERR_BAD_TOPIC', `not a publishable topic: ${JSON.stringify(topic)}`);
  }
}

export function assertPattern(pattern: string): void {
  if (typeof pattern !== 'string' || !isValidPattern(pattern)) {
    throw new HubError('BUS_ERR_BAD_TOPIC', `not a valid topic filter: ${JSON.stringify(pattern)}`);
  }
}

/** Compiles a filter into a predicate; exact filters compare strings, the others walk levels. */
export function compilePattern(pattern: string): (topic: string) => boolean {
  assertPattern(pattern);
  if (!pattern.includes('+') && !pattern.includes('#')) return (topic) => topic === pattern;
  if (pattern === '#') return () => true;
  const levels = pattern.split('/');
  const last = levels.length - 1;
  const endsWithHash = levels[last] === '#';
  // `a/#` also matches `a` itself [MQTT-4.7.1-2]
  const parent = endsWithHash ? levels.slice(0, -1).join('/') : null;
  return (topic) => {
    if (parent !== null && topic === parent) return true;
    const parts = topic.split('/');
    if (endsWithHash ? parts.length < last : parts.length !== levels.length) return false;
    for (let i = 0; i < levels.length; i++) {
      const l = levels[i];
      if (l === '#') return true;
      if (l !== '+' && l !== parts[i]) return false;
    }
    return true;
  };
}
