/**
 * The service's own pages (the approvals inbox, the admin workspace) in a main-area tab: an
 * iframe on `/services/dataaccess/pages/<name>?theme=light|dark` that follows JupyterLab's theme,
 * with a toolbar button to open the same page in a browser tab of its own. Those pages log the
 * person in to the service themselves (OAuth): deciding never goes through this server's token.
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { IFrame, launchIcon, ToolbarButton } from '@jupyterlab/ui-components';

import { ITrans } from './i18n';
import { dataAccessIcon } from './icon';
import { IMe, ServicePageName } from './model';

export const SERVICE_PAGE_PREFIX = 'jupyterhub-dataaccess-page-';
const SERVICE_NAME = 'dataaccess';

/** Where the page is: as `GET /me` says, else under the hub's services prefix. */
export function servicePagePath(name: ServicePageName, me: IMe | null): string {
  const announced = me?.pages?.[name];
  if (announced) {
    return announced;
  }
  const hubPrefix = PageConfig.getOption('hubPrefix') || '/hub/';
  const base = hubPrefix.replace(/hub\/?$/, '');
  return URLExt.join(base, 'services', SERVICE_NAME, 'pages', name);
}

/** The page's URL in the given theme. */
export function themedUrl(path: string, light: boolean): string {
  const url = new URL(path, window.location.href);
  url.searchParams.set('theme', light ? 'light' : 'dark');
  return url.toString();
}

/** Whether JupyterLab shows a light theme now (the body carries it). */
export function isLightTheme(): boolean {
  return document.body.dataset.jpThemeLight !== 'false';
}

export type ServicePage = MainAreaWidget<IFrame> & { pageName: ServicePageName };

export function createServicePage(name: ServicePageName, path: string, trans: ITrans): ServicePage {
  const frame = new IFrame({
    // The service's page runs its own script and forms (XSRF-protected) and exports files.
    sandbox: [
      'allow-scripts',
      'allow-same-origin',
      'allow-forms',
      'allow-downloads',
      'allow-popups'
    ],
    referrerPolicy: 'no-referrer'
  });
  frame.addClass('jp-DataAccess-serviceFrame');
  const page = new MainAreaWidget({ content: frame }) as ServicePage;
  page.pageName = name;
  page.id = SERVICE_PAGE_PREFIX + name;
  page.addClass('jp-DataAccess-servicePage');
  page.title.icon = dataAccessIcon;
  page.title.label = name === 'approvals' ? trans.__('Approvals') : trans.__('Admin workspace');
  page.title.closable = true;

  const show = (): void => {
    const url = themedUrl(path, isLightTheme());
    if (frame.url !== url) {
      frame.url = url;
    }
  };
  show();
  // Follow the theme: JupyterLab flips data-jp-theme-light on the body when it changes.
  const watch = new MutationObserver(show);
  watch.observe(document.body, { attributes: true, attributeFilter: ['data-jp-theme-light'] });
  page.disposed.connect(() => watch.disconnect());

  page.toolbar.addItem(
    'open-in-browser-tab',
    new ToolbarButton({
      icon: launchIcon,
      label: trans.__('Open in a browser tab'),
      tooltip: trans.__('Open this page in a browser tab of its own'),
      onClick: () => window.open(themedUrl(path, isLightTheme()), '_blank', 'noopener')
    })
  );
  return page;
}
