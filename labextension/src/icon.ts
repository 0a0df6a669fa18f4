/** The panel's icon: a database cylinder, coloured by the theme (jp-icon3). */
import { LabIcon } from '@jupyterlab/ui-components';

const svgstr = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M12 2C7.6 2 4 3.3 4 5v14c0 1.7 3.6 3 8 3s8-1.3 8-3V5c0-1.7-3.6-3-8-3zm0 2c3.9 0 6 1.1 6 1.5S15.9 7 12 7 6 5.9 6 5.5 8.1 4 12 4zm6 15c0 .4-2.1 1.5-6 1.5S6 19.4 6 19v-2.2c1.5.8 3.7 1.2 6 1.2s4.5-.4 6-1.2V19zm0-5c0 .4-2.1 1.5-6 1.5S6 14.4 6 14v-2.2c1.5.8 3.7 1.2 6 1.2s4.5-.4 6-1.2V14zm0-5c0 .4-2.1 1.5-6 1.5S6 9.4 6 9V7.3C7.5 8.1 9.7 8.5 12 8.5s4.5-.4 6-1.2V9z"/>
  </g>
</svg>`;

export const dataAccessIcon = new LabIcon({ name: 'jupyterhub-dataaccess:data', svgstr });
