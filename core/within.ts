/** `p`'s value, or undefined once `ms` passed; the timer is always cleared. */
export async function within<T>(ms: number, p: Promise<T>): Promise<T | undefined> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<undefined>((r) => {
        t = setTimeout(() => r(undefined), ms);
      }),
    ]);
  } finally {
    clearTimeout(t);
  }
}
