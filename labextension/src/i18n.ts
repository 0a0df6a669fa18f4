/**
 * Translation-ready strings. In JupyterLab the bundle is `ITranslator.load(DOMAIN)`; the React
 * components take it from `PanelContext`, and outside JupyterLab (tests) `plainTrans` stands in:
 * the message itself, with `%1`, `%2`, ... replaced by the arguments, as JupyterLab's null
 * translator does.
 */

export const DOMAIN = 'jupyterhub_dataaccess';

/** The part of JupyterLab's TranslationBundle the panel uses. */
export interface ITrans {
  __(msgid: string, ...args: unknown[]): string;
  _n(msgid: string, msgidPlural: string, n: number, ...args: unknown[]): string;
}

function fill(text: string, args: unknown[]): string {
  return text.replace(/%(\d+)/g, (whole, index) => {
    const at = Number(index) - 1;
    return at < args.length ? String(args[at]) : whole;
  });
}

export const plainTrans: ITrans = {
  __: (msgid, ...args) => fill(msgid, args),
  _n: (msgid, msgidPlural, n, ...args) => fill(n === 1 ? msgid : msgidPlural, [n, ...args])
};
